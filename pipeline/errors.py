"""The one exception type users see as a single line (python -m pipeline prints it, exit code 2)."""


class UserError(Exception):
    """Bad input a user can fix: missing file, corrupt data, bad config value. Message is one line."""
