"""The one exception type that means 'the user's input is wrong' (exit code 2 in the CLI)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: says what is wrong (naming the file, line or field) and how to fix it."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.fix}" if self.fix else self.message
