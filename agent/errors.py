"""One exception type for every user-facing failure.

Commands raise :class:`AgentError` with a one-line message; the CLI prints it
as ``error: <message>`` and exits with ``code`` (never a traceback)."""

from __future__ import annotations


class AgentError(Exception):
    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code

    def __str__(self) -> str:  # always one line
        return " ".join(str(self.args[0]).split())
