"""``agent repo`` — owned by the serving work (issue 3)."""

from agent.errors import AgentError


def repo() -> None:
    """Write a Triton model repository from a manifest."""
    raise AgentError("not implemented yet")
