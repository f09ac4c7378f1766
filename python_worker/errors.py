"""Exceptions whose message is meant for the person at the terminal, not a traceback."""

from __future__ import annotations


class CallPanionError(Exception):
    """An error with a message that tells the user what went wrong and what to do."""


class StackError(CallPanionError):
    """The local Postgres stack cannot be set up, started, stopped or inspected."""


class MigrationError(CallPanionError):
    """A SQL file failed to apply; nothing of it was applied or recorded."""

    def __init__(self, file: str, message: str, kind: str = "migration") -> None:
        super().__init__(f"{kind} {file} failed: {message}")
        self.file = file
        self.db_message = message
