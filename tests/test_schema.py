"""The versioned documents are a contract with the collector: keep them stable."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from agent.build.manifest import load_manifest, save_manifest
from agent.schema import (MANIFEST_SCHEMA_VERSION, RESULT_SCHEMA_VERSION, BenchResult, EngineRecord,
                          Manifest, ResultDocument)

DOC = {
    "schema_version": "1.0",
    "id": "6f1c2b9e-0000-4000-8000-000000000001",
    "created_at": "2026-01-01T00:00:00Z",
    "target": "inprocess",
    "node": {"node_name": "n1", "hostname": "h1", "cpu": "x", "cpu_count": 2},
    "settings": {"warmup": 5, "window_seconds": 1.0, "stability_pct": 10.0, "max_windows": 8},
    "results": [{
        "model": "resnet18", "format": "onnx", "batch_size": 8,
        "latency_ms": {"p50": 1, "p90": 2, "p95": 3, "p99": 4, "mean": 2, "min": 1, "max": 5, "std": 1},
        "throughput_ips": 100.0, "requests": 10, "windows": 3, "stable": True,
        "speedup_vs_eager": 2.0, "peak_host_mem_mb": 900.0,
    }],
}

RESULT_FIELDS = {
    "model", "format", "precision", "device", "batch_size", "concurrency", "triton_model",
    "protocol", "latency_ms", "throughput_ips", "requests", "windows", "stable",
    "speedup_vs_eager", "peak_host_mem_mb", "peak_gpu_mem_mb", "server",
}
V11_FIELDS = {"cv_pct", "speedup_ci_low", "speedup_ci_high", "speedup_pairs", "scenario",
              "server_metrics", "telemetry", "input", "client"}
SCENARIO = {"name": "offline", "valid": False, "invalid_reasons": ["min duration not met"],
            "metric": "samples_per_second", "metric_value": 120.5, "target_qps": 100.0,
            "min_duration_ms": 1000, "min_query_count": 1, "queries": 1, "samples": 240}


def test_result_document_fields_are_stable():
    assert RESULT_SCHEMA_VERSION == "1.2"
    assert set(BenchResult.model_fields) == RESULT_FIELDS | V11_FIELDS | {"tuning"}
    assert set(ResultDocument.model_fields) == {"schema_version", "id", "created_at", "target",
                                                "node", "settings", "results"}
    schema = ResultDocument.model_json_schema()
    assert schema["properties"]["schema_version"]["enum"] == ["1.0", "1.1", "1.2"]
    doc = ResultDocument.model_validate(DOC)
    assert doc.results[0].precision == "fp32" and doc.results[0].concurrency == 1
    assert ResultDocument.model_validate_json(doc.model_dump_json()) == doc


def test_a_1_0_document_is_still_accepted_and_1_1_fields_need_1_1():
    """Version 1.1 only adds optional fields: a 1.0 document validates unchanged; a 1.0
    document carrying a 1.1 field is refused with a message naming the field."""
    assert ResultDocument.model_validate(DOC).schema_version == "1.0"
    r11 = {**DOC["results"][0], "cv_pct": 2.5, "speedup_ci_low": 1.8, "speedup_ci_high": 2.2,
           "speedup_pairs": 4, "scenario": SCENARIO}
    doc = ResultDocument.model_validate({**DOC, "schema_version": "1.1", "results": [r11]})
    assert doc.results[0].scenario.name == "offline" and not doc.results[0].scenario.valid
    with pytest.raises(ValidationError, match="results.0.format pt2 needs schema_version 1.1"):
        ResultDocument.model_validate({**DOC, "results": [{**DOC["results"][0], "format": "pt2"}]})
    with pytest.raises(ValidationError, match="results.0.scenario needs schema_version 1.1"):
        ResultDocument.model_validate({**DOC, "results": [{**DOC["results"][0], "scenario": SCENARIO}]})
    with pytest.raises(ValidationError):
        ResultDocument.model_validate({**DOC, "schema_version": "1.1",
                                       "results": [{**r11, "scenario": {**SCENARIO, "name": "burst"}}]})
    # 1.2's upper bound of the client's count (server_metrics.client_requests_max) needs 1.2
    metrics = {"request_success": 10, "client_requests": 9, "client_requests_max": 11, "request_failure": 0,
               "inference_count": 10, "exec_count": 10, "request_us": 1.0, "queue_us": 0.1,
               "compute_input_us": 0.1, "compute_infer_us": 0.5, "compute_output_us": 0.1}
    r12 = {**r11, "server_metrics": metrics}
    assert ResultDocument.model_validate({**DOC, "schema_version": "1.2", "results": [r12]})
    with pytest.raises(ValidationError, match="results.0.server_metrics.client_requests_max needs schema_version 1.2"):
        ResultDocument.model_validate({**DOC, "schema_version": "1.1", "results": [r12]})


@pytest.mark.parametrize("change", [
    {"schema_version": "2.0"},
    {"unexpected": 1},
    {"target": "cloud"},
    {"results": [{**DOC["results"][0], "format": "openvino"}]},
    {"results": [{**DOC["results"][0], "extra_metric": 1}]},
])
def test_result_document_refuses_other_versions_and_unknown_fields(change):
    with pytest.raises(ValidationError):
        ResultDocument.model_validate({**DOC, **change})


@pytest.mark.slow
def test_manifest_roundtrip_and_names(built_engines, tmp_path):
    m = load_manifest(built_engines)
    save_manifest(tmp_path, m)
    again = load_manifest(tmp_path)
    assert again.engines == m.engines
    rec: EngineRecord = m.engines["resnet18_onnx"]
    assert rec.name == "resnet18_onnx"
    assert rec.model_copy(update={"precision": "fp16"}).name == "resnet18_onnx_fp16"
    raw = json.loads((built_engines / "manifest.json").read_text())
    assert raw["schema_version"] == "1.1"
    with pytest.raises(ValidationError):
        Manifest.model_validate({**raw, "schema_version": "0.9"})
    # a 1.0 manifest (before the pt2 format) is still read, and rewritten as 1.1
    old = Manifest.model_validate({**raw, "schema_version": "1.0"})
    save_manifest(tmp_path, old)
    assert json.loads((tmp_path / "manifest.json").read_text())["schema_version"] == "1.1"


def _with(path: str, value):  # noqa: ANN001, ANN202
    """DOC with one value replaced (dotted path, list indices as numbers)."""
    doc = json.loads(json.dumps(DOC))
    *parents, last = path.split(".")
    target = doc
    for p in parents:
        target = target[int(p)] if isinstance(target, list) else target[p]
    target[last] = value
    return doc


BAD_VALUES = [
    ("results.0.latency_ms.p99", float("nan"), "finite"),
    ("results.0.throughput_ips", float("inf"), "finite"),
    ("results.0.latency_ms.p50", -1.0, "greater than or equal to 0"),
    ("results.0.latency_ms.p95", 5.0, "percentiles out of order: p95 5 > p99 4"),
    ("results.0.batch_size", 0, "greater than or equal to 1"),
    ("results.0.concurrency", 0, "greater than or equal to 1"),
    ("results.0.batch_size", 2**40, "less than or equal to 2147483647"),
    ("results.0.model", "../etc", "pattern"),
    ("node.node_name", "", "at least 1 character"),
    ("node.node_name", "node 1", "pattern"),
    ("node.node_name", "n" * 129, "at most 128 characters"),
    ("node.cpu", "Xeon\x00", "control character"),
    ("node.labels", {"a\x00": "b"}, "control character"),
    ("node.price_per_hour", -0.5, "greater than or equal to 0"),
    ("id", "x" * 65, "at most 64 characters"),
    ("id", "a/b", "pattern"),
    ("created_at", "2999-01-01T00:00:00Z", "in the future"),
]


@pytest.mark.parametrize("path, value, message", BAD_VALUES, ids=[f"{p}={str(v)[:12]!r}" for p, v, _ in BAD_VALUES])
def test_result_document_checks_values_not_only_types(path, value, message):
    with pytest.raises(ValidationError, match=message):
        ResultDocument.model_validate(_with(path, value))


def test_result_document_accepts_edge_values():
    from datetime import timedelta

    from agent.schema import utcnow

    soon = (utcnow() + timedelta(minutes=2)).isoformat()
    for path, value in [("created_at", soon), ("node.price_per_hour", 0.0), ("node.cpu", "Xeon® — 2 GHz"),
                        ("results.0.latency_ms.p99", 3.0), ("node.node_name", "gpu-01.eu_west.internal")]:
        ResultDocument.model_validate(_with(path, value))


def test_control_character_check_reads_escapes_not_backslashes():
    from agent.schema import has_control_character

    assert has_control_character({"a": "x\x00"}) and has_control_character({"k\x01": 1})
    assert has_control_character(["\x7f"]) and has_control_character({"a": ["\n"]})
    assert not has_control_character({"a": "C:\\new\\table \\u0000", "b": "ü ✓"})


@pytest.mark.parametrize("document", ["result", "manifest"])
def test_published_json_schemas_match_the_code(document):
    """docs/schema/<document>-<version>.json is what `agent schema <document>` prints:
    regenerate with `agent schema result > docs/schema/result-<version>.json` after a change."""
    from pathlib import Path

    from agent.commands.schema import json_schema

    version = {"result": RESULT_SCHEMA_VERSION, "manifest": MANIFEST_SCHEMA_VERSION}[document]
    committed = Path(__file__).resolve().parents[1] / "docs" / "schema" / f"{document}-{version}.json"
    assert json.loads(committed.read_text()) == json_schema(document)


def test_a_valid_document_validates_against_the_published_schema():
    import jsonschema

    from agent.commands.schema import json_schema

    jsonschema.validate(DOC, json_schema("result"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**DOC, "results": [{**DOC["results"][0], "batch_size": 0}]}, json_schema("result"))
