"""Jinja2 rendering of everything under ``templates/`` (Triton configs,
inventories, reports). One environment, strict about undefined variables."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jinja2


def templates_dir() -> Path:
    if os.environ.get("INFERFLEET_TEMPLATES"):
        return Path(os.environ["INFERFLEET_TEMPLATES"])
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("inferfleet templates directory not found")


@functools.cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=jinja2.select_autoescape(["html"]),
    )


def render(name: str, **context) -> str:
    return environment().get_template(name).render(**context)
