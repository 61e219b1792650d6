"""Write the report: a self-contained HTML page (figures embedded), Markdown
and CSV files. All files go to a temporary directory that replaces ``out``
only when everything was written.

results.csv (every newest result: 372,000 rows, 106 MB at 1,000 nodes) is the
one file whose size and time grow with the fleet: by default it is written up
to RESULTS_CSV_MAX_ROWS rows, above only on request (``--results-csv``; both
pages then say so). It is written a line at a time with one %-format per row: its text cells (nodes, GPUs, stacks,
run ids: a few thousand distinct values) are passed through ``agent.csvsafe``
once per distinct value and reused, its floats are formatted ``%.6g`` (the
format csvsafe gives floats), so the file is byte for byte what
``csvsafe.writer`` writes (the tests compare) at a fraction of the per-cell cost.
scenarios.csv likewise, every cell cached per column."""

from __future__ import annotations

import io
from dataclasses import fields
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import IO

from agent import csvsafe
from agent.fleet.data import (
    MAX_NODES_DETAIL,
    RESULTS_CSV_MAX_ROWS,
    ROW_FIELDS,
    Comparison,
    Report,
    Row,
    Rows,
    as_tuples,
    no_gc,
)
from agent.fleet.scenarios import SCENARIO_FIELDS
from agent.fleet.tuning import context as tuning_context
from agent.fsutil import atomic_path

FORMATS = ("html", "md", "csv")
MAX_INVALID_SHOWN = 200  # INVALID scenario results listed in HTML/Markdown; scenarios.csv has all

CSV_FILES = {
    "results.csv": "newest result of every node × model × backend × precision × batch × concurrency",
    "by_gpu.csv": "the same, summarised per GPU model (medians over nodes)",
    "best.csv": "fastest and cheapest configuration per model under the p99 budget",
    "comparison.csv": "before/after stack comparison per node (regressions flagged)",
    "scenarios.csv": "newest MLPerf LoadGen scenario result per node × model × backend × scenario "
                     "(verdict, metric, INVALID reasons)",
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


class _Cells(dict):
    """value -> its CSV cell exactly as csvsafe.writer writes it (text escaped and quoted
    where needed, floats ``.6g``, None empty), computed once per distinct value. One
    per column: True and 1 are equal dict keys but not the same cell."""

    def __missing__(self, value) -> str:  # noqa: ANN001
        if value is None or value == "":
            cell = ""
        elif value.__class__ is not str:  # numbers, times, booleans: never quoted
            cell = str(csvsafe.safe_cell(value))
        else:
            buf = io.StringIO()
            csvsafe.writer(buf).writerow([value])
            cell = buf.getvalue()[:-1]
        self[value] = cell
        return cell


def _results_csv(f: IO[str], tuples: list[tuple]) -> None:
    """results.csv (see the module's docstring): the same bytes as ``_csv`` would write.
    The cells that come from the run (node, GPU, instance type, price; run, time, stack)
    are joined once per run, the other few-valued ones once per value (``_Cells``); the
    measured floats are formatted here."""
    f.write(",".join(ROW_FIELDS) + "\n")
    node, gpu, itype, price, model, backend, prec, stable, run, created, stack = (_Cells() for _ in range(11))
    runs: dict[tuple, tuple[str, str]] = {}  # (run, node, created) -> the row's run cells
    g = "%.6g"
    line = "%s,%s,%s,%s,%d,%d,%.6g,%.6g,%.6g,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n"  # ROW_FIELDS, run cells joined
    for i in range(0, len(tuples), 10_000):
        chunk = tuples[i:i + 10_000]
        keys = [(t[13], t[0], t[14]) for t in chunk]
        for k, t in zip(keys, chunk):
            if k not in runs:  # GPU, instance type, price and stack are the run's (data._runs)
                runs[k] = (f"{node[t[0]]},{gpu[t[1]]},{itype[t[2]]},{price[t[3]]}",
                           f"{run[t[13]]},{created[t[14]]},{stack[t[15]]}")
        f.write("".join([line % (
            (r := runs[k])[0], model[t[4]], backend[t[5]], prec[t[6]], t[7], t[8], t[9], t[10], t[11],
            stable[t[12]], r[1], "" if t[16] is None else g % t[16], "" if t[17] is None else g % t[17],
            "" if t[18] is None else g % t[18], *("" if t[j] is None else g % t[j] for j in range(19, 24)))
            for k, t in zip(keys, chunk)]))


def _cached_csv(f: IO[str], records, columns: list[str], get) -> None:  # noqa: ANN001
    """``_csv`` for a table whose columns repeat their values (scenarios.csv: nodes,
    runs, units, reasons): every cell through a per-column ``_Cells``."""
    f.write(",".join(columns) + "\n")
    cells = [_Cells() for _ in columns]
    f.writelines([",".join([c[v] for c, v in zip(cells, get(r))]) + "\n" for r in records])


def _unread(report: Report) -> bool:
    """The report did not read its rows (``Rows.unread``: a large fleet, data.build_report)."""
    return isinstance(report.rows, Rows) and not report.rows.read


def writes_results_csv(report: Report, results_csv: bool | None = None) -> bool:
    """``results_csv`` when given, else whether the report has at most RESULTS_CSV_MAX_ROWS
    rows; never for a report that did not read its rows (``data.build_report(rows=...)``)."""
    if _unread(report):
        if results_csv:
            report.rows.tuples  # noqa: B018 -- raises the AgentError that says how to read them
        return False
    return len(report.rows) <= RESULTS_CSV_MAX_ROWS if results_csv is None else results_csv


def _csv_tables(report: Report) -> dict[str, tuple]:
    cmp_cols = [f.name for f in fields(Comparison)]
    best_cols = ["model", "criterion", "node", "gpu", "backend", "precision", "batch_size", "concurrency",
                 "throughput_ips", "p99_ms", "cost_per_million", "note"]
    gpu_cols = list(report.by_gpu[0]) if report.by_gpu else ["model"]
    scenario_rows = report.scenarios.rows if report.scenarios else []
    return {  # records None: the rows were not read (a large fleet's report, data.build_report)
        # every newest result: the tuples are already in Row field order (written by _results_csv)
        "results.csv": (None if _unread(report) else as_tuples(report.rows), list(ROW_FIELDS), None),
        "scenarios.csv": (scenario_rows, list(SCENARIO_FIELDS), attrgetter(*SCENARIO_FIELDS)),
        "by_gpu.csv": (report.by_gpu, gpu_cols, itemgetter(*gpu_cols)),
        "best.csv": (report.best, best_cols, itemgetter(*best_cols)),
        "comparison.csv": (report.comparisons, cmp_cols, attrgetter(*cmp_cols)),
    }


def csv_files(report: Report) -> dict[str, str]:
    """Each CSV file's text (``write_report`` writes them straight to the files)."""
    out = {}
    for name, table in _csv_tables(report).items():
        if table[0] is None:
            continue
        buf = io.StringIO()
        _write_table(buf, name, table)
        out[name] = buf.getvalue()
    return out


def _write_table(f: IO[str], name: str, table: tuple) -> None:
    if name == "results.csv":
        _results_csv(f, table[0])
    elif name == "scenarios.csv":
        _cached_csv(f, *table)
    else:
        _csv(f, *table)


def context(report: Report, with_plots: bool, results_csv: bool = True) -> dict:
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
    sc = report.scenarios
    scen_models = []
    if sc is not None and sc.summary:
        summary: dict[str, list[dict]] = {}
        for g in sc.summary:
            summary.setdefault(g["model"], []).append(g)
        rows: dict[str, list] = {}
        if detail:
            for x in sc.rows:
                rows.setdefault(x.model, []).append(x)
        scen_models = [{"name": m, "summary": summary[m], "rows": rows.get(m, [])} for m in sorted(summary)]
    ci = report.speedup_ci

    def speedup(x: Row) -> str:
        """speedup vs eager, with its 95 % interval where the document has one."""
        s = _fmt(x.speedup_vs_eager, 2)
        iv = ci.get((x.run_id, x.model, x.backend, x.precision, x.batch_size, x.concurrency))
        return s if iv is None else f"{s} [{iv[0]:.2f}–{iv[1]:.2f}]"

    def split(x: Row) -> str:
        """Triton's per-request queue / compute time (served results), with the queue's share."""
        if x.queue_us is None or x.compute_us is None:
            return "–"
        total = x.queue_us + x.compute_us
        share = f" ({x.queue_us / total:.0%} queue)" if total > 0 else ""
        return f"{x.queue_us:,.0f} / {x.compute_us:,.0f}{share}"

    return {"r": report, "models": models, "detail": detail, "max_nodes_detail": MAX_NODES_DETAIL,
            "fmt": _fmt, "money": _money, "csv_files": CSV_FILES, "unstable": report.unstable,
            "comparisons_shown": report.comparisons if len(report.comparisons) <= 300 else flagged,
            "flagged": flagged, "speedup": speedup, "split": split, "scenarios": sc, "scenario_models": scen_models,
            "invalid_shown": sc.invalid[:MAX_INVALID_SHOWN] if sc else [], "max_invalid_shown": MAX_INVALID_SHOWN,
            "results_csv": results_csv, "results_csv_max_rows": RESULTS_CSV_MAX_ROWS,
            "tuning_models": tuning_context(report.tuning, with_plots)}


def write_report(report: Report, out: Path, formats: list[str], results_csv: bool | None = None) -> list[Path]:
    """``results_csv``: write results.csv (with "csv" in ``formats``); None: up to
    RESULTS_CSV_MAX_ROWS rows (``writes_results_csv``)."""
    from agent.templating import render

    written = []
    with_results = "csv" in formats and writes_results_csv(report, results_csv)
    with no_gc(), atomic_path(Path(out)) as tmp:
        tmp.mkdir()
        if "csv" in formats:
            for name, table in _csv_tables(report).items():
                if table[0] is None or (name == "results.csv" and not with_results):
                    continue
                with open(tmp / name, "w", newline="", buffering=1 << 20) as f:
                    _write_table(f, name, table)
                written.append(name)
        if "md" in formats:
            (tmp / "report.md").write_text(render("report/report.md.j2", **context(report, False, with_results)))
            written.append("report.md")
        if "html" in formats:
            (tmp / "report.html").write_text(render("report/report.html.j2", **context(report, True, with_results)))
            written.append("report.html")
    return [Path(out) / n for n in written]
