"""The one exception type a user can cause.

Anything raised as `LmforgeError` is a problem with the user's input or environment, not a bug:
the CLI prints its message as one line on stderr (no traceback) and exits with status 2. The
message names the problem and the fix in one sentence.
"""


class LmforgeError(Exception):
    """A problem the user can fix; the message says what it is and how."""
