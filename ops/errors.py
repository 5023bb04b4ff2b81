"""The one error type ops prints as a single line (no traceback) before exiting 1."""


class OpsError(Exception):
    """What went wrong and what to do about it, in one line."""
