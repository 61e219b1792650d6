"""The interface both runtimes implement (:mod:`.process`, :mod:`.container`)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from agent.triton.server.settings import ServerSettings


class Runtime(ABC):
    """How a tritonserver is started, watched and stopped. ``launch`` returns the state
    that ``agent serve start`` records (``server.json``); the other methods get it back."""

    name: str

    @abstractmethod
    def launch(self, s: ServerSettings) -> dict:
        """Start the server in the background; the state to record (runtime-specific keys)."""

    @abstractmethod
    def alive(self, state: dict) -> bool:
        """Whether the server recorded in ``state`` still runs."""

    @abstractmethod
    def log_tail(self, s: ServerSettings, state: dict) -> str:
        """The last lines of the server's log (for a failed start)."""

    @abstractmethod
    def stop(self, s: ServerSettings, state: dict, timeout: float) -> bool:
        """Stop the server recorded in ``state``; True when one was stopped."""

    @abstractmethod
    def foreground_command(self, s: ServerSettings) -> tuple[list[str], dict[str, str]]:
        """The command line and environment that run the server in the foreground (systemd)."""


def runtime_for(name: str) -> Runtime:
    from agent.triton.server.container import ContainerRuntime
    from agent.triton.server.process import ProcessRuntime
    from agent.triton.server.settings import runtime_name

    return {"process": ProcessRuntime, "container": ContainerRuntime}[runtime_name(name)]()
