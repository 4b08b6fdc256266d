"""The errors a user can fix, as one family.

Every error caused by what the user gave (an option value, a model reference, a prompt file, a
store, a result file, an output path) derives from ``UserError``. The command line prints such an
error as one line, ``alignloc: error: <what> (<what to do>)``, and exits with code 2; anything else
is a bug and keeps its traceback. The subclasses live next to the code that raises them (for
example ``PromptFormatError`` in ``alignloc.prompts``); docs/errors.md lists them all.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention


class UserError(Exception):
    """An error the user can fix; its message says what is wrong and what to do."""


class UsageError(UserError, ValueError):
    """An option value (or a combination of options) is invalid; raised before any work starts."""


class OutputError(UserError):
    """An output path cannot be used: not a folder, not writable, or holding files alignloc did not write."""


def one_line(message: str) -> str:
    """``message`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(message).split())

