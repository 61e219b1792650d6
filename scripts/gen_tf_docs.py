"""Write each Terraform module's and stack's README section in terraform-docs' format.

terraform-docs (a Go binary) is not installable from the registries the project can
reach, so this script renders its default markdown table layout (Requirements,
Providers, Modules, Resources, Inputs, Outputs) from the HCL, parsed with
python-hcl2, between `<!-- BEGIN_TF_DOCS -->` and `<!-- END_TF_DOCS -->` in the
directory's README.md (appended when the markers are missing). Inputs and outputs
are listed in name order, as terraform-docs does by default.

    python scripts/gen_tf_docs.py            # rewrite the READMEs
    python scripts/gen_tf_docs.py --check    # exit 1 when a README is out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hcl2
from readme_blocks import main as update_readmes
from readme_blocks import replace_block

ROOT = Path(__file__).resolve().parents[1]
TERRAFORM = ROOT / "terraform"
BEGIN, END = "<!-- BEGIN_TF_DOCS -->", "<!-- END_TF_DOCS -->"


def _unquote(value):
    """python-hcl2 keeps string literals quoted and expressions as ${...}: plain values."""
    if isinstance(value, str):
        if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
            return json.loads(value)
        if value.startswith("${") and value.endswith("}"):
            return value[2:-1]
        return value
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if not k.startswith("__")}
    return value


def _blocks(directory: Path, kind: str) -> list[tuple]:
    """(labels..., body) for every `kind` block in the directory's .tf files."""
    found = []
    for tf in sorted(directory.glob("*.tf")):
        doc = hcl2.load(tf.open())
        for block in doc.get(kind, []):
            for label, body in block.items():
                if kind in ("resource", "data"):
                    for name, inner in body.items():
                        found.append((_unquote(label), _unquote(name), inner))
                else:
                    found.append((_unquote(label), body))
    return found


def _esc(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _anchor(kind: str, name: str) -> str:
    escaped = name.replace("_", "\\_")
    return f'<a name="{kind}_{name}"></a> [{escaped}](#{kind}\\_{escaped})'


def _default(body: dict) -> str:
    if "default" not in body:
        return "n/a"
    value = _unquote(body["default"])
    text = json.dumps(value, indent=2)
    if "\n" not in text:
        return f"`{text}`"
    return "<pre>" + text.replace("\n", "<br/>").replace("|", "\\|") + "</pre>"


def _requirements(directory: Path) -> tuple[list[str], dict[str, str]]:
    rows, providers = [], {}
    for body in _terraform_blocks(directory):
        if "required_version" in body:
            rows.append(f"| {_anchor('requirement', 'terraform')} | {_unquote(body['required_version'])} |")
        for req in body.get("required_providers", []):
            for name, spec in req.items():
                if name.startswith("__"):
                    continue
                spec = _unquote(spec)
                rows.append(f"| {_anchor('requirement', name)} | {spec.get('version', 'n/a')} |")
                providers[name] = spec.get("source", f"hashicorp/{name}")
    return rows, providers


def _terraform_blocks(directory: Path) -> list[dict]:
    blocks = []
    for tf in sorted(directory.glob("*.tf")):
        blocks += hcl2.load(tf.open()).get("terraform", [])
    return blocks


def _resource_link(providers: dict[str, str], kind: str, rtype: str, name: str) -> str:
    provider = rtype.split("_", 1)[0]
    source = providers.get(provider, f"hashicorp/{provider}")
    page = "resources" if kind == "resource" else "data-sources"
    prefix = "data." if kind == "data" else ""
    short = rtype.split("_", 1)[1] if "_" in rtype else rtype
    return (f"| [{prefix}{rtype}.{name}](https://registry.terraform.io/providers/{source}/latest/docs/"
            f"{page}/{short}) | {'data source' if kind == 'data' else 'resource'} |")


def _section(title: str, head: list[str], rows: list[str], empty: str) -> list[str]:
    """One terraform-docs section: its table, or the sentence it writes when there is none."""
    return [f"## {title}", "", *([*head, *rows] if rows else [empty])]


def tf_docs(directory: Path) -> str:
    """The generated markdown (between the markers) for one module or root."""
    req_rows, providers = _requirements(directory)
    used = {r[0].split("_", 1)[0] for r in _blocks(directory, "resource") + _blocks(directory, "data")}
    used |= {name for name, _ in _blocks(directory, "provider")}
    resources = sorted((rtype, name, kind) for kind in ("resource", "data")
                       for rtype, name, _ in _blocks(directory, kind))
    inputs = [f"| {_anchor('input', name)} | {_esc(_unquote(body.get('description', 'n/a')))} | "
              f"`{_esc(_unquote(body.get('type', 'any')))}` | {_default(body)} | "
              f"{'no' if 'default' in body else 'yes'} |" for name, body in sorted(_blocks(directory, "variable"))]
    sections = [
        _section("Requirements", ["| Name | Version |", "|------|---------|"], req_rows, "No requirements."),
        _section("Providers", ["| Name | Version |", "|------|---------|"],
                 [f"| {_anchor('provider', p)} | n/a |" for p in sorted(providers) if p in used], "No providers."),
        _section("Modules", ["| Name | Source | Version |", "|------|--------|---------|"],
                 [f"| {_anchor('module', n)} | {_unquote(b['source'])} | n/a |"
                  for n, b in sorted(_blocks(directory, "module"))], "No modules."),
        _section("Resources", ["| Name | Type |", "|------|------|"],
                 [_resource_link(providers, kind, rtype, name) for rtype, name, kind in resources], "No resources."),
        _section("Inputs", ["| Name | Description | Type | Default | Required |",
                            "|------|-------------|------|---------|:--------:|"], inputs, "No inputs."),
        _section("Outputs", ["| Name | Description |", "|------|-------------|"],
                 [f"| {_anchor('output', n)} | {_esc(_unquote(b.get('description', 'n/a')))} |"
                  for n, b in sorted(_blocks(directory, "output"))], "No outputs."),
    ]
    return "\n\n".join("\n".join(sec) for sec in sections) + "\n"


def render(readme_text: str, block: str) -> str:
    return replace_block(readme_text, BEGIN, END, block)


def directories() -> list[Path]:
    """Every module and applied root (a directory with a variables.tf)."""
    return sorted(p.parent for p in TERRAFORM.glob("*/*/variables.tf"))


def main(argv: list[str] | None = None) -> int:
    return update_readmes(__doc__, [(d / "README.md", lambda text, d=d: render(text, tf_docs(d)),
                                     str(d.relative_to(TERRAFORM))) for d in directories()], ROOT, "gen_tf_docs.py", argv)


if __name__ == "__main__":
    sys.exit(main())
