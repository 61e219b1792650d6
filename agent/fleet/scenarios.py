"""MLPerf LoadGen scenarios in the fleet report.

A scenario result (``results.scenario`` set) is its own configuration: node ×
model × backend (``onnx``, or ``triton-onnx`` when served) × precision × batch
× scenario, newest by effective time as in ``data.LATEST_SQL``. Its metric is
the scenario's MLPerf metric (``results.scenario_metric``): samples/s
(offline), scheduled QPS at the p99 latency bound (server), p90 latency
(single-stream), p99 latency per query (multi-stream). LoadGen's verdict is
``scenario_valid``. The newest results are kept in ``latest_results``
(``SCENARIOS_SQL`` is the reference the tests compare with); the report
summarises them in SQL (``agent.fleet.summary.scenario_summary``) and reads the
rows themselves only for scenarios.csv (with results.csv) and a small fleet's
tables. An INVALID result is listed with LoadGen's reasons (read
from the stored document of its run — INVALID results are few, so only those
documents are read) and is never ranked: medians, "best" and the ranking use
VALID results only."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam, text

METRIC = {  # scenario -> (metric, unit, higher is better)
    "offline": ("samples_per_second", "samples/s", True),
    "server": ("scheduled_qps", "QPS at p99 bound", True),
    "single-stream": ("p90_latency_ms", "ms p90 latency", False),
    "multi-stream": ("p99_latency_ms", "ms p99 latency per query", False),
}
ORDER = tuple(METRIC)  # offline, server, single-stream, multi-stream
RANK = {s: i for i, s in enumerate(ORDER)}

# reference query (tests): the newest scenario result per configuration, by window function
SCENARIOS_SQL = """
WITH latest AS (
  SELECT r.*, ROW_NUMBER() OVER (
           PARTITION BY r.node_name, r.model, r.backend, r.precision, r.batch_size, r.scenario
           ORDER BY r.effective_at DESC, r.id DESC) AS rn
  FROM (SELECT res.id, res.run_id, res.node_name, res.model, res.precision, res.batch_size, res.scenario,
               res.scenario_valid, res.scenario_metric, res.created_at, res.format,
               CASE WHEN ru0.target = 'triton' THEN 'triton-' || res.format ELSE res.format END AS backend,
               CASE WHEN res.created_at > ru0.received_at THEN ru0.received_at
                    ELSE res.created_at END AS effective_at
        FROM results res JOIN runs ru0 ON ru0.id = res.run_id
        WHERE res.scenario IS NOT NULL {where}) r
)
SELECT l.node_name, COALESCE(ru.gpu_name, 'cpu'), l.model, l.backend, l.precision, l.batch_size,
       l.scenario, l.scenario_valid, l.scenario_metric, l.run_id, l.created_at, l.format
FROM latest l JOIN runs ru ON ru.id = l.run_id
WHERE l.rn = 1
"""


@dataclass(slots=True)
class ScenarioRow:
    node: str
    gpu: str
    model: str
    backend: str
    precision: str
    batch_size: int
    scenario: str
    verdict: str  # VALID | INVALID
    metric: str
    value: float
    unit: str
    run_id: str
    created_at: datetime
    reasons: str = ""  # LoadGen's reasons, "; "-joined (INVALID only)


SCENARIO_FIELDS = tuple(ScenarioRow.__dataclass_fields__)


@dataclass
class ScenarioTables:
    rows: list[ScenarioRow] | None  # newest per configuration, by model, scenario, node, backend (None: not read)
    summary: list[dict]  # per model × scenario × GPU × backend: VALID/INVALID counts, median and best VALID
    best: list[dict]  # per model × scenario: the best VALID result (never an INVALID one)
    invalid: list[ScenarioRow] = field(default_factory=list)


_DECODE = json.JSONDecoder().raw_decode
INVALID_MARK = '"valid":false'


def invalid_results(doc: str) -> list[dict]:
    """The results of a stored document whose scenario LoadGen called INVALID.

    The collector stores a document as the schema writes it (compact JSON; a result
    starts with its "model" field), so each ``"valid":false`` is traced back to the
    start of its result and only that result is decoded — a few kB instead of the
    whole document (300 kB for 420 results). Anything unexpected (the mark elsewhere,
    another layout, no mark at all) falls back to decoding the whole document."""
    out = []
    i = doc.find(INVALID_MARK)
    while i != -1:
        start = doc.rfind('{"model":', 0, i)
        try:
            r = _DECODE(doc, start)[0] if start != -1 else None
        except ValueError:
            r = None
        sc = r.get("scenario") if isinstance(r, dict) else None
        if not isinstance(sc, dict) or sc.get("valid") is not False:
            out = []
            break
        out.append(r)
        i = doc.find(INVALID_MARK, i + 1)
    if out:
        return out
    return [r for r in json.loads(doc).get("results", [])  # asked for a run with one: another layout
            if isinstance(r.get("scenario"), dict) and r["scenario"].get("valid") is False]


def _reasons(conn, wanted: dict[str, list[tuple]]) -> dict[tuple, str]:
    """(run, model, format, precision, batch, scenario) -> LoadGen's reasons, from the
    documents of the runs in ``wanted`` (only runs with an INVALID newest result)."""
    out: dict[tuple, str] = {}
    stmt = text("SELECT id, document FROM runs WHERE id IN :ids").bindparams(bindparam("ids", expanding=True))
    ids = sorted(wanted)
    for i in range(0, len(ids), 500):
        for rid, doc in conn.execute(stmt, {"ids": ids[i:i + 500]}):
            for r in invalid_results(doc):
                sc = r["scenario"]
                key = (rid, r["model"], r["format"], r.get("precision", "fp32"), r["batch_size"], sc["name"])
                out.setdefault(key, "; ".join(sc.get("invalid_reasons") or ["INVALID (no reason recorded)"]))
    return out


def scenario_rows(conn, raw: list[tuple]) -> list[ScenarioRow]:
    """``raw``: SCENARIOS_SQL-shaped tuples (node, GPU, model, backend, precision, batch,
    scenario, valid, metric value, run, created, format) -> rows in the report's order,
    an INVALID one with LoadGen's reasons (read from its run's document)."""
    wanted: dict[str, list[tuple]] = defaultdict(list)
    for t in raw:
        if not t[7]:
            wanted[t[9]].append(t)
    reasons = _reasons(conn, wanted)
    rows = []
    for (node, gpu, model, backend, precision, bs, scenario, valid, value, run_id, created, fmt) in raw:
        metric, unit, _ = METRIC.get(scenario, (scenario, "", True))
        why = "" if valid else reasons.get((run_id, model, fmt, precision, bs, scenario),
                                           "INVALID (no reason recorded)")
        if isinstance(created, str):
            created = datetime.fromisoformat(created)
        rows.append(ScenarioRow(node, gpu, model, backend, precision, bs, scenario,
                                "VALID" if valid else "INVALID", metric, value, unit, run_id, created, why))
    rows.sort(key=lambda r: (r.model, RANK.get(r.scenario, 9), r.scenario, r.node, r.backend, r.precision,
                             r.batch_size))
    return rows


def tables_from_rows(conn, raw: list[tuple]) -> ScenarioTables:
    """The tables computed from every row (the reference the tests compare the report's
    SQL summaries with, ``agent.fleet.summary.scenario_summary``)."""
    rows = scenario_rows(conn, raw)
    return ScenarioTables(rows, *_summaries(rows, RANK), invalid=[r for r in rows if r.verdict == "INVALID"])


def _summaries(rows: list[ScenarioRow], rank: dict) -> tuple[list[dict], list[dict]]:
    groups: dict[tuple, list[ScenarioRow]] = defaultdict(list)
    for r in rows:
        groups[(r.model, rank.get(r.scenario, 9), r.scenario, r.gpu, r.backend, r.precision, r.batch_size)].append(r)
    summary = []
    best: dict[tuple, ScenarioRow] = {}
    for key in sorted(groups):
        model, _rank, scenario, gpu, backend, precision, bs = key
        rs = groups[key]
        higher = METRIC.get(scenario, ("", "", True))[2]
        valid = [r.value for r in rs if r.verdict == "VALID"]
        summary.append({"model": model, "scenario": scenario, "gpu": gpu, "backend": backend,
                        "precision": precision, "batch_size": bs, "nodes": len(rs), "valid": len(valid),
                        "invalid": len(rs) - len(valid), "unit": rs[0].unit,
                        "median": statistics.median(valid) if valid else None,
                        "best": (max(valid) if higher else min(valid)) if valid else None})
        for r in rs:
            if r.verdict != "VALID":
                continue
            b = best.get((model, scenario))
            if b is None or (r.value > b.value if higher else r.value < b.value):
                best[(model, scenario)] = r
    ranked = []
    for model, scenario in sorted({(k[0], k[2]) for k in groups}, key=lambda x: (x[0], rank.get(x[1], 9), x[1])):
        r = best.get((model, scenario))
        ranked.append({"model": model, "scenario": scenario, "node": r.node if r else None,
                       "gpu": r.gpu if r else None, "backend": r.backend if r else None,
                       "batch_size": r.batch_size if r else None, "value": r.value if r else None,
                       "unit": METRIC.get(scenario, ("", "", True))[1],
                       "note": "" if r else "no VALID result"})
    return summary, ranked
