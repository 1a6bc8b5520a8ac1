"""The one exception type that the entry points turn into a one-line error, and ``reason``."""


class UserError(Exception):
    """Bad input or state a user can fix: printed as one line, non-zero exit."""


def reason(e: BaseException) -> str:
    """An exception as a short one-line reason: its type and the first line of its message."""
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first[:160]}" if first else type(e).__name__
