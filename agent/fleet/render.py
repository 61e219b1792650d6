"""Write the report: a self-contained HTML page (figures embedded), Markdown
and CSV files. All files go to a temporary directory that replaces ``out``
only when everything was written."""

from __future__ import annotations

import io
from dataclasses import fields
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import IO

from agent import csvsafe
from agent.fleet.data import ROW_FIELDS, Comparison, Report, Row, as_tuples, no_gc
from agent.fsutil import atomic_path

FORMATS = ("html", "md", "csv")
MAX_NODES_DETAIL = 25  # per-node tables in HTML/Markdown up to this many nodes; the CSV always has all

CSV_FILES = {
    "results.csv": "newest result of every node × model × backend × precision × batch × concurrency",
    "by_gpu.csv": "the same, summarised per GPU model (medians over nodes)",
    "best.csv": "fastest and cheapest configuration per model under the p99 budget",
    "comparison.csv": "before/after stack comparison per node (regressions flagged)",
}


def _fmt(x, digits: int = 1) -> str:  # noqa: ANN001
    if x is None:
        return "–"
    if isinstance(x, float):
        if abs(x) >= 100 or digits == 0:
            return f"{x:,.0f}"
        return f"{x:.{digits}f}"
    return str(x)


def _money(x) -> str:  # noqa: ANN001
    return "–" if x is None else f"${x:,.3f}" if x < 10 else f"${x:,.2f}"


def _csv(f: IO[str], records, columns: list[str], get) -> None:  # noqa: ANN001
    # agent.csvsafe: text from the documents (node, GPU, instance type, stack,
    # notes...) that a spreadsheet would execute is escaped; numbers (floats
    # written as %.6g, ints) stay numbers, negative ones included.
    w = csvsafe.writer(f)
    w.writerow(columns)
    w.writerows(records if get is None else map(get, records))


def _csv_tables(report: Report) -> dict[str, tuple]:
    cmp_cols = [f.name for f in fields(Comparison)]
    best_cols = ["model", "criterion", "node", "gpu", "backend", "precision", "batch_size", "concurrency",
                 "throughput_ips", "p99_ms", "cost_per_million", "note"]
    gpu_cols = list(report.by_gpu[0]) if report.by_gpu else ["model"]
    return {
        # every newest result: the tuples are already in Row field order
        "results.csv": (as_tuples(report.rows), list(ROW_FIELDS), None),
        "by_gpu.csv": (report.by_gpu, gpu_cols, itemgetter(*gpu_cols)),
        "best.csv": (report.best, best_cols, itemgetter(*best_cols)),
        "comparison.csv": (report.comparisons, cmp_cols, attrgetter(*cmp_cols)),
    }


def csv_files(report: Report) -> dict[str, str]:
    """Each CSV file's text (``write_report`` writes them straight to the files)."""
    out = {}
    for name, table in _csv_tables(report).items():
        buf = io.StringIO()
        _csv(buf, *table)
        out[name] = buf.getvalue()
    return out


def context(report: Report, with_plots: bool) -> dict:
    from agent.fleet.plots import model_figures

    from markupsafe import Markup

    detail = len(report.nodes) <= MAX_NODES_DETAIL
    by_gpu: dict[str, list[dict]] = {}
    for g in report.by_gpu:
        by_gpu.setdefault(g["model"], []).append(g)
    rows_by_model: dict[str, list[Row]] = {}
    if detail or (with_plots and report.series is None):  # Row objects only for a small fleet
        for r in report.rows:
            rows_by_model.setdefault(r.model, []).append(r)
    figures = {}
    if with_plots:
        drawn = model_figures(rows_by_model, report.series)
        figures = {m: Markup(svg) if svg else None for m, svg in drawn.items()}  # escaped in plots.draw
    models = [{"name": m, "rows": rows_by_model.get(m, []) if detail else [], "by_gpu": by_gpu.get(m, []),
               "figure": figures.get(m)} for m in report.models]
    flagged = [c for c in report.comparisons if c.flag != "unchanged"]
    return {"r": report, "models": models, "detail": detail, "max_nodes_detail": MAX_NODES_DETAIL,
            "fmt": _fmt, "money": _money, "csv_files": CSV_FILES, "unstable": report.unstable,
            "comparisons_shown": report.comparisons if len(report.comparisons) <= 300 else flagged,
            "flagged": flagged}


def write_report(report: Report, out: Path, formats: list[str]) -> list[Path]:
    from agent.templating import render

    written = []
    with no_gc(), atomic_path(Path(out)) as tmp:
        tmp.mkdir()
        if "csv" in formats:
            for name, table in _csv_tables(report).items():
                with open(tmp / name, "w", newline="", buffering=1 << 20) as f:
                    _csv(f, *table)
                written.append(name)
        if "md" in formats:
            (tmp / "report.md").write_text(render("report/report.md.j2", **context(report, False)))
            written.append("report.md")
        if "html" in formats:
            (tmp / "report.html").write_text(render("report/report.html.j2", **context(report, True)))
            written.append("report.html")
    return [Path(out) / n for n in written]
