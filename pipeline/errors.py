"""The one exception type users see as a single line (python -m pipeline prints it, exit code 2)."""


class UserError(Exception):
    """Bad input a user can fix: missing file, corrupt data, bad config value. Message is one line."""


def run_main(main, argv=None) -> int:
    """Run an entry point `main(argv)`; a UserError becomes one line on stderr and exit code 2."""
    import sys

    try:
        return main(sys.argv[1:] if argv is None else argv) or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
