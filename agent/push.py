"""Spool result documents on disk and push them to the collector — owned by
the fleet-report work (issue 4)."""

from __future__ import annotations

from agent.config import AgentConfig
from agent.schema import ResultDocument


def spool_document(doc: ResultDocument, config: AgentConfig) -> None:
    raise NotImplementedError


def push_spool(config: AgentConfig, collector_url: str | None = None, token_env: str | None = None) -> None:
    raise NotImplementedError
