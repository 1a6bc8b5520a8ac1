"""What every benchmark script shares: where results go and how README tables are filled."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")


def update_readme(key: str, table: str) -> None:
    """Replaces the text between ``<!-- key:begin -->`` and ``<!-- key:end -->`` in README.md."""
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    path = os.path.join(REPO, "README.md")
    text = open(path).read()
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        with open(path, "w") as f:
            f.write(head + begin + "\n" + table + "\n" + end + rest.split(end, 1)[1])
