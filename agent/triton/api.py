"""Moved to :mod:`agent.triton.client` (the one Triton client module); kept only for
code written against this name."""

from agent.triton.client import TritonAPI  # noqa: F401
