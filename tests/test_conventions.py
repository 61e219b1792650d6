"""Static conventions of the Ansible and Terraform trees (fast: no containers, no network).

Generated docs cannot drift (role variable tables, terraform-docs sections), every
collection the playbooks use is in ansible/requirements.yml, every role entry carries
tags, each role stands alone with its own prefixed and commented defaults, the Triton
release pin is one value, and every applied Terraform root has a lock file.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE = ROOT / "ansible"
ROLES = sorted(p.parent.parent for p in (ANSIBLE / "roles").glob("*/meta/main.yml"))
STACK = yaml.safe_load((ANSIBLE / "group_vars" / "all" / "stack.yml").read_text())
FQCN = re.compile(r"^([a-z0-9_]+)\.([a-z0-9_]+)\.[a-z0-9_]+$")


def _yaml(path: Path):
    return yaml.safe_load(path.read_text())


def _run_script(name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), "--check"], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("script", ["gen_role_docs.py", "gen_tf_docs.py"])
def test_generated_docs_are_current(script):
    proc = _run_script(script)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- collections ------------------------------------------------------------------


def _walk(node, found: set[str], key: str | None = None) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(k, str) and FQCN.match(k):  # a module used as a task key
                found.add(k)
            _walk(v, found, k)
    elif isinstance(node, list):
        for v in node:
            _walk(v, found, key)
    elif isinstance(node, str) and key in {"ansible_connection", "stdout_callback", "name"} and FQCN.match(node):
        # connection / callback plugins, and include_role/import_role of a collection role
        found.add(node)


def _collections_used() -> set[str]:
    found: set[str] = set()
    files = [*ANSIBLE.rglob("*.yml"), *(ROOT / "tests" / "ansible").rglob("*.yml")]
    for path in files:
        if ".molecule" in path.parts or path.name == "requirements.yml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            _walk(doc, found)
    # plugins named in Python (inventories the agent renders, callbacks the tests select)
    for path in [*(ROOT / "agent").rglob("*.py"), *(ROOT / "templates").rglob("*"), *(ROOT / "tests").glob("*.py")]:
        if path.is_file():
            for m in re.finditer(r"(?:ansible_connection[\"']?\s*[:=]\s*|ANSIBLE_STDOUT_CALLBACK=)[\"']?"
                                 r"([a-z0-9_]+\.[a-z0-9_]+\.[a-z0-9_]+)", path.read_text(errors="replace")):
                found.add(m.group(1))
    # Molecule's podman driver runs containers.podman modules
    for scenario in ANSIBLE.glob("molecule/*/molecule.yml"):
        if _yaml(scenario)["driver"]["name"] == "podman":
            found.add("containers.podman.podman_container")
    return {".".join(FQCN.match(name).groups()) for name in found}


def test_requirements_cover_every_collection_used():
    listed = {c["name"] for c in _yaml(ANSIBLE / "requirements.yml")["collections"]}
    used = _collections_used() - {"ansible.builtin", "ansible.legacy"}
    assert "containers.podman" in used  # the scan sees the node connection and the Molecule driver
    assert used <= listed, f"add to ansible/requirements.yml: {sorted(used - listed)}"


# --- tags -------------------------------------------------------------------------------


@pytest.mark.parametrize("playbook", sorted(p.name for p in (ANSIBLE / "playbooks").glob("*.yml")))
def test_every_role_entry_is_tagged(playbook):
    untagged = []
    for play in _yaml(ANSIBLE / "playbooks" / playbook):
        for entry in play.get("roles", []):
            if entry["role"] not in entry.get("tags", []):
                untagged.append(entry["role"])
        for task in play.get("tasks", []) + play.get("pre_tasks", []):
            include = task.get("ansible.builtin.include_role")
            if include and not task.get("tags"):
                untagged.append(f"include_role {include['name']}")
            if include and "always" in task.get("tags", []):
                # dynamic includes pass tags on only through `apply`
                assert "always" in include.get("apply", {}).get("tags", []), task["name"]
    assert not untagged, f"{playbook}: roles without tags: {untagged}"


# --- roles stand alone ------------------------------------------------------------------


def _defaults(role: Path) -> dict:
    path = role / "defaults" / "main.yml"
    return (_yaml(path) or {}) if path.is_file() else {}


def _uncommented(path: Path) -> list[str]:
    """Top-level variables whose run of consecutive variables is not headed by a comment."""
    lines = path.read_text().splitlines()
    missing = []
    for i, line in enumerate(lines):
        m = re.match(r"^([a-z0-9_]+):", line)
        if not m:
            continue
        j = i - 1
        while j >= 0 and (re.match(r"^[a-z0-9_]+:", lines[j]) or lines[j].startswith((" ", "-"))):
            j -= 1
        if j < 0 or not lines[j].startswith("#"):
            missing.append(m.group(1))
    return missing


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_role_defaults_are_prefixed_commented_and_specified(role):
    defaults = _defaults(role)
    specs = _yaml(role / "meta" / "argument_specs.yml")["argument_specs"]
    documented = {name for entry in specs.values() for name in (entry.get("options") or {})}
    assert [v for v in defaults if not v.startswith(role.name + "_")] == []
    assert _uncommented(role / "defaults" / "main.yml") == []
    assert sorted(set(defaults) - documented) == [], "variables missing from meta/argument_specs.yml"
    for entry in specs.values():
        for name, option in (entry.get("options") or {}).items():
            assert option.get("description"), f"{name}: no description in meta/argument_specs.yml"


@pytest.mark.parametrize("role", [r for r in ROLES if r.name != "preflight"], ids=lambda r: r.name)
def test_role_defaults_do_not_lean_on_global_variables(role):
    """A role runs with its own defaults; group_vars/all/stack.yml overrides them.
    (preflight is exempt: checking the global matrix is its job.)"""
    text = (role / "defaults" / "main.yml").read_text()
    assert re.findall(r"\binferfleet_[a-z0-9_]+", text) == []


def test_group_vars_override_only_declared_role_variables():
    declared = {v for role in ROLES for v in _defaults(role)}
    overrides = [k for k in STACK if not k.startswith("inferfleet_")]
    assert overrides and sorted(set(overrides) - declared) == []


# --- the Triton release pin ------------------------------------------------------------


def test_triton_release_pin_is_one_value():
    release = STACK["inferfleet_triton_release"]
    contents = STACK["inferfleet_triton_releases"][release]
    triton = ANSIBLE / "roles" / "triton"
    spec = _yaml(triton / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert STACK["triton_release"] == "{{ inferfleet_triton_release }}"  # the fleet takes the matrix's
    # the role defaults mirror that release
    assert _defaults(triton)["triton_release"] == release == spec["triton_release"]["default"]
    assert _defaults(triton)["triton_version"] == contents["triton"]
    roles = ANSIBLE / "roles"
    assert _defaults(roles / "cuda")["cuda_version"] == contents["cuda"]
    assert _defaults(roles / "cudnn")["cudnn_version"] == contents["cudnn"]
    assert _defaults(roles / "tensorrt")["tensorrt_version"] == contents["tensorrt"]
    # no other file under ansible/ spells the release outside the matrix and the triton role
    pinned = re.compile(r"""["']?\b""" + re.escape(release) + r"""\b["']?""")
    allowed = {ANSIBLE / "group_vars" / "all" / "stack.yml", triton / "defaults" / "main.yml",
               triton / "meta" / "argument_specs.yml", triton / "README.md"}
    strays = [str(p.relative_to(ROOT)) for p in (ANSIBLE / "roles").rglob("*")
              if p.is_file() and p not in allowed and p.suffix in {".yml", ".j2"}
              and any(pinned.search(line) for line in p.read_text().splitlines() if not line.lstrip().startswith("#"))]
    assert strays == []


# --- Terraform lock files ------------------------------------------------------------------


def _applied_roots() -> list[Path]:
    return sorted(p for p in (ROOT / "terraform" / "stacks").iterdir() if p.is_dir())


def test_stacks_are_the_roots_make_provision_applies():
    assert [p.name for p in _applied_roots()] == ["aws", "genesiscloud"]
    assert not (ROOT / "terraform" / "examples").exists()


@pytest.mark.parametrize("root", _applied_roots(), ids=lambda p: p.name)
def test_applied_root_has_a_lock_file(root):
    lock = root / ".terraform.lock.hcl"
    if not lock.is_file() and root.name == "genesiscloud":
        pytest.skip("genesiscloud/genesiscloud is in no provider mirror here and the registry is unreachable: "
                    "run `terraform providers lock` for this root where it is reachable")
    assert lock.is_file(), f"{lock.relative_to(ROOT)} missing: run terraform init (or providers lock)"
    text = lock.read_text()
    required = re.findall(r'source\s*=\s*"([\w.-]+/[\w-]+(?:/[\w-]+)?)"', "".join(p.read_text() for p in root.glob("*.tf")))
    for source in required:
        full = source if source.count("/") == 2 else f"registry.terraform.io/{source}"
        assert f'provider "{full}"' in text, f"{lock.relative_to(ROOT)} does not lock {source}"
    assert re.search(r'hashes\s*=\s*\[\s*"h1:', text), "lock file without hashes"
