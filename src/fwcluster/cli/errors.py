"""The one error type the command line turns into a one-line message."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (or a state they can change); printed as one line."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code
