"""Where Terraform finds providers: a filesystem mirror when one exists
(offline machines), the public registry otherwise.

The mirror is a setting, ``INFERFLEET_TF_PLUGIN_MIRROR`` (the directory that
holds ``registry.terraform.io/``); unset, it is discovered the way
``find / -maxdepth 4 -type d -name registry.terraform.io`` would."""

from __future__ import annotations

import os
from pathlib import Path

MIRROR_ENV = "INFERFLEET_TF_PLUGIN_MIRROR"
_SKIP = {"/proc", "/sys", "/dev", "/run"}


def discover_mirror(root: str = "/", maxdepth: int = 4) -> Path | None:
    """The parent of the first ``registry.terraform.io`` directory within ``maxdepth``."""
    base = root.rstrip("/").count("/")
    for dirpath, dirnames, _ in os.walk(root):
        if dirpath in _SKIP:
            dirnames[:] = []
            continue
        depth = dirpath.rstrip("/").count("/") - base + 1
        if "registry.terraform.io" in dirnames and depth <= maxdepth:
            return Path(dirpath)
        if depth >= maxdepth:
            dirnames[:] = []
        else:
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "node_modules"]
    return None


def plugin_mirror() -> Path | None:
    value = os.environ.get(MIRROR_ENV)
    if value is not None:
        return Path(value) if value and Path(value).is_dir() else None
    return discover_mirror()


def mirrored_providers(mirror: Path) -> list[str]:
    """``host/namespace/type`` of every provider in the mirror."""
    out = []
    for host in sorted(p for p in mirror.iterdir() if p.is_dir()):
        for ns in sorted(p for p in host.iterdir() if p.is_dir()):
            out += [f"{host.name}/{ns.name}/{t.name}" for t in sorted(ns.iterdir()) if t.is_dir()]
    return out


def cli_config(mirror: Path | None) -> str:
    """A Terraform CLI config: mirrored providers from the mirror only (so no
    registry lookup is attempted for them), everything else from the registry."""
    if mirror is None:
        return "# no provider mirror: providers come from the registry\n"
    providers = mirrored_providers(mirror)
    if not providers:
        return f"# {mirror} holds no providers: providers come from the registry\n"
    listed = ", ".join(f'"{p}"' for p in providers)
    return (
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path    = "{mirror}"\n    include = [{listed}]\n  }}\n'
        f"  direct {{\n    exclude = [{listed}]\n  }}\n"
        "}\n"
    )
