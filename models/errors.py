"""The one exception type for bad user input, shared by every layer of the project.

The command line turns it into a one-line message and exit code 2; anything else is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """Bad input from the user: unknown name, unreadable file, weights that don't fit, ..."""
