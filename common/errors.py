"""The one exception type that means 'the user's input is wrong' (exit code 2 in the CLI)."""

from __future__ import annotations

EXIT_OK = 0  # a command done as asked
EXIT_BAD_INPUT = 2  # what a UserError ends a command with (and a failed run, a pre-flight stop)


class UserError(Exception):
    """Bad input: says what is wrong (naming the file, line or field) and how to fix it."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.fix}" if self.fix else self.message
