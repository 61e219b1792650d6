"""``agent schema``: the published JSON Schemas of the documents the agent writes."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from agent.errors import AgentError

DOCUMENTS = ("result", "manifest")


def json_schema(document: str) -> dict:
    """The JSON Schema (draft 2020-12) of ``result`` (what the collector ingests) or
    ``manifest`` (a build directory's manifest.json), generated from the pydantic models."""
    from agent.schema import (
        MANIFEST_SCHEMA_VERSION,
        RESULT_SCHEMA_VERSION,
        Manifest,
        ResultDocument,
    )

    model, version = {"result": (ResultDocument, RESULT_SCHEMA_VERSION),
                      "manifest": (Manifest, MANIFEST_SCHEMA_VERSION)}[document]
    schema = model.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://inferfleet.dev/schema/{document}-{version}.json", **schema}


def schema(
    document: Annotated[str, typer.Argument(help="result (the benchmark result document) or manifest (manifest.json).")],
) -> None:
    """Print the JSON Schema of a document (committed as docs/schema/<document>-<version>.json)."""
    if document not in DOCUMENTS:
        raise AgentError(f"unknown document {document!r}: choose result or manifest")
    print(json.dumps(json_schema(document), indent=2, sort_keys=True))
