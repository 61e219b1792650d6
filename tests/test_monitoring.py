"""Fleet monitoring files: rendered from a real inventory (read by ansible-inventory),
checked by Prometheus's own promtool (unpacked from Debian's package by
scripts/promtool.sh): the scrape configuration, every dashboard query as PromQL, and
the collector's /metrics exposition."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from agent.infra.inventory import render_inventory
from conftest import error_line, run_cli

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = {"nodes": {
    "gc-1": {"public_ip": "203.0.113.10", "private_ip": "10.1.0.10", "ssh_user": "ubuntu", "cloud": "genesiscloud",
             "region": "ARC-IS-HAF-1", "instance_type": "vcpu-4_memory-12g_disk-80g_nvidia3080-1",
             "gpu": "RTX 3080", "price_per_hour": 0.34},
    "cpu-1": {"public_ip": "203.0.113.11", "ssh_user": "debian", "cloud": "aws", "region": "eu-west-1",
              "instance_type": "c7i.large", "price_per_hour": 0.09, "triton_metrics_port": 9802},
}}


@pytest.fixture(scope="module")
def promtool() -> str:
    r = subprocess.run(["bash", str(ROOT / "scripts" / "promtool.sh"), str(ROOT / "build" / "promtool")],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.skip(f"promtool unavailable (Debian's prometheus package could not be fetched): {r.stderr[-300:]}")
    return r.stdout.strip()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("monitoring")
    (d / "inventory.yml").write_text(render_inventory(OUTPUTS))
    r = run_cli("infra", "monitoring", "-i", str(d / "inventory.yml"), "--out", str(d / "out"),
                "--collector", "10.1.0.2:8080", timeout=180)
    assert r.returncode == 0, r.stderr
    return d / "out"


def test_scrape_configuration_targets_every_node_and_passes_promtool(rendered, promtool):
    check = subprocess.run([promtool, "check", "config", str(rendered / "prometheus.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "SUCCESS" in check.stdout, check.stdout + check.stderr
    cfg = yaml.safe_load((rendered / "prometheus.yml").read_text())
    jobs = {j["job_name"]: [(t, sc["labels"]["node"] if "labels" in sc else None)
                            for sc in j["static_configs"] for t in sc["targets"]] for j in cfg["scrape_configs"]}
    # private address when there is one; a node's own metrics port; DCGM only on the GPU node
    assert jobs["triton"] == [("203.0.113.11:9802", "cpu-1"), ("10.1.0.10:8002", "gc-1")]
    assert jobs["node"] == [("203.0.113.11:9100", "cpu-1"), ("10.1.0.10:9100", "gc-1")]
    assert jobs["dcgm"] == [("10.1.0.10:9400", "gc-1")]
    assert jobs["inferfleet-collector"] == [("10.1.0.2:8080", None)]


def test_every_dashboard_query_is_valid_promql(rendered, promtool, tmp_path):
    """Grafana's variables replaced as Grafana would ($node -> .*, $__rate_interval -> 1m),
    then each query checked as a recording rule by promtool."""
    dash = json.loads((rendered / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(dash["panels"]) >= 8 and all(p["targets"] for p in dash["panels"])
    assert len({(p["gridPos"]["x"], p["gridPos"]["y"]) for p in dash["panels"]}) == len(dash["panels"])
    used = set(re.findall(r"\b(nv_[a-z_]+|DCGM_FI_[A-Z_]+|node_[a-z_]+|inferfleet_[a-z_]+)", " ".join(exprs)))
    assert {"nv_inference_count", "nv_inference_queue_duration_us", "nv_gpu_utilization", "nv_gpu_power_usage",
            "DCGM_FI_DEV_GPU_UTIL", "inferfleet_collector_documents_total"} <= used
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"inferfleet:panel_{i}", "expr": e.replace("$__rate_interval", "1m").replace("$node", ".*")}
        for i, e in enumerate(exprs)]}]}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    check = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and f"{len(exprs)} rules found" in check.stdout, check.stdout + check.stderr


def test_collector_exposition_passes_promtool_lint(promtool):
    from agent.collector.metrics import IngestMetrics

    m = IngestMetrics()
    for status in (201, 201, 200, 422, 503):
        m.answered(status)
    m.results.inc(62)
    m.seconds.observe(0.004)
    text = m.exposition().decode()
    assert 'inferfleet_collector_documents_total{outcome="created",status="201"} 2.0' in text
    assert 'inferfleet_collector_documents_total{outcome="unavailable",status="503"} 1.0' in text
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_bad_monitoring_input_is_one_line(tmp_path):
    r = run_cli("infra", "monitoring", "-i", str(tmp_path / "missing.yml"), "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "does not exist" in error_line(r)
    (tmp_path / "inv.yml").write_text(render_inventory(OUTPUTS))
    r = run_cli("infra", "monitoring", "-i", str(tmp_path / "inv.yml"), "--scrape-interval", "soon")
    assert r.returncode != 0 and "Prometheus duration" in error_line(r)
    r = run_cli("infra", "monitoring", "-i", str(tmp_path / "inv.yml"), "--out", str(tmp_path / "o"),
                "--collector", "http://10.0.0.1:8080/v1")
    assert r.returncode != 0 and "host:port" in error_line(r)
    assert not (tmp_path / "o").exists()
