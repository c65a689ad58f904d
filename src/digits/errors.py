"""The one exception type the user sees."""


class DigitsError(Exception):
    """A problem the user can fix; shown as one line, never a traceback."""
