"""What every benchmark script shares: where results go and how README tables are filled."""

import json
import os
from typing import Any, Optional

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


def publish(name: str, title: str, table: str, data: Any = None, readme_key: Optional[str] = None,
            directory: str = RESULTS) -> str:
    """Writes ``<directory>/<name>.md`` (and ``<name>.json`` from ``data``), and the README
    table between the ``readme_key`` markers; returns ``table``."""
    os.makedirs(directory, exist_ok=True)
    if data is not None:
        with open(os.path.join(directory, f"{name}.json"), "w") as f:
            json.dump(data, f, indent=2)
    with open(os.path.join(directory, f"{name}.md"), "w") as f:
        f.write(f"# {title}\n\n{table}\n")
    if readme_key:
        update_readme(readme_key, table)
    return table
