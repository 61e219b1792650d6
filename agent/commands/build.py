"""``agent build-engines`` — owned by the agent-core work (issue 2)."""

from agent.errors import AgentError


def build_engines() -> None:
    """Export, verify and record engines."""
    raise AgentError("not implemented yet")
