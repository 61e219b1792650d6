"""``agent models`` — owned by the agent-core work (issue 2)."""

from agent.errors import AgentError


def models() -> None:
    """List the model registry."""
    raise AgentError("not implemented yet")
