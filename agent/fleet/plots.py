"""Figures for the HTML report: matplotlib (Agg, no display), embedded as PNG
data URIs so the page opens offline.

Drawing dominates the report's time (about a third of a second per figure on
one core), so the per-model series are summarised here (medians over nodes)
and the figures are drawn in a process pool, one figure per task."""

from __future__ import annotations

import base64
import io
import os
import statistics
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor

from agent.fleet.data import Row

BACKEND_STYLE = {"eager": "-", "torchscript": "--", "onnx": "-.", "tensorrt": ":"}
MAX_NODE_GROUPS = 6
POOL_MIN_FIGURES = 4


def model_series(model: str, rows: list[Row]) -> dict | None:
    """Throughput and p99 against batch size, one line per node (or GPU, medians over
    its nodes) and backend, at the lowest concurrency measured."""
    if not rows:
        return None
    conc = min(r.concurrency for r in rows)
    rows = [r for r in rows if r.concurrency == conc]
    by_node = len({r.node for r in rows}) <= MAX_NODE_GROUPS
    points: dict[tuple[str, str], dict[int, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        points[(f"{r.node} ({r.gpu})" if by_node else r.gpu, r.backend)][r.batch_size].append(r)
    lines = []
    for (group, backend), by_batch in sorted(points.items()):
        xs = sorted(by_batch)
        lines.append((group, backend, xs,
                      [statistics.median(r.throughput_ips for r in by_batch[x]) for x in xs],
                      [statistics.median(r.p99_ms for r in by_batch[x]) for x in xs]))
    who = "node" if by_node else "GPU (median over nodes)"
    return {"title": f"{model} — by {who} and backend, concurrency {conc}", "lines": lines,
            "batches": sorted({r.batch_size for r in rows})}


def draw(series: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    groups = sorted({g for g, *_ in series["lines"]})
    backends = sorted({b for _, b, *_ in series["lines"]})
    colors = {g: plt.cm.tab10(i % 10) for i, g in enumerate(groups)}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.6))
    fig.subplots_adjust(left=0.06, right=0.74, bottom=0.15, top=0.88, wspace=0.25)
    for group, backend, xs, ips, p99 in series["lines"]:
        kw = dict(color=colors[group], linestyle=BACKEND_STYLE.get(backend, "-"), marker="o", markersize=3)
        ax1.plot(xs, ips, **kw)
        ax2.plot(xs, p99, **kw)
    for ax, label in ((ax1, "throughput (inferences/s)"), (ax2, "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(series["batches"], [str(b) for b in series["batches"]])
        ax.minorticks_off()
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(series["title"], fontsize=10)
    # one legend entry per colour (node/GPU) and per line style (backend), not per line
    handles = [Line2D([], [], color=colors[g], label=g) for g in groups]
    handles += [Line2D([], [], color="black", linestyle=BACKEND_STYLE.get(b, "-"), label=b) for b in backends]
    fig.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(0.75, 0.5), frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)  # fixed layout: "tight" would draw everything twice
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def model_figures(rows_by_model: dict[str, list[Row]]) -> dict[str, str | None]:
    specs = {m: model_series(m, rows) for m, rows in rows_by_model.items()}
    todo = {m: s for m, s in specs.items() if s is not None}
    workers = min(os.cpu_count() or 1, len(todo), 8)
    if len(todo) < POOL_MIN_FIGURES or workers < 2:
        drawn = {m: draw(s) for m, s in todo.items()}
    else:
        import multiprocessing

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            drawn = dict(zip(todo, pool.map(draw, todo.values())))
    return {m: drawn.get(m) for m in specs}
