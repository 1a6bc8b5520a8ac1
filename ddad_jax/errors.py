"""The one exception type that the entry points turn into a one-line error."""


class UserError(Exception):
    """Bad input or state a user can fix: printed as one line, non-zero exit."""
