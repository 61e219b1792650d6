"""Figures for the HTML report: matplotlib (Agg, no display), embedded as PNG
data URIs so the page opens offline."""

from __future__ import annotations

import base64
import io
import statistics
from collections import defaultdict

from agent.fleet.data import Row

BACKEND_STYLE = {"eager": "-", "torchscript": "--", "onnx": "-.", "tensorrt": ":"}
MAX_NODE_GROUPS = 6


def _png(fig) -> str:  # noqa: ANN001
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def model_figure(model: str, rows: list[Row]) -> str | None:
    """Throughput and p99 against batch size, one line per node (or GPU) and backend,
    at the lowest concurrency measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return None
    conc = min(r.concurrency for r in rows)
    rows = [r for r in rows if r.concurrency == conc]
    by_node = len({r.node for r in rows}) <= MAX_NODE_GROUPS
    series: dict[tuple[str, str], dict[int, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        group = f"{r.node} ({r.gpu})" if by_node else r.gpu
        series[(group, r.backend)][r.batch_size].append(r)
    groups = sorted({g for g, _ in series})
    colors = {g: plt.cm.tab10(i % 10) for i, g in enumerate(groups)}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    for (group, backend), points in sorted(series.items()):
        xs = sorted(points)
        ips = [statistics.median(r.throughput_ips for r in points[x]) for x in xs]
        p99 = [statistics.median(r.p99_ms for r in points[x]) for x in xs]
        kw = dict(color=colors[group], linestyle=BACKEND_STYLE.get(backend, "-"), marker="o", markersize=3,
                  label=f"{group} · {backend}")
        ax1.plot(xs, ips, **kw)
        ax2.plot(xs, p99, **kw)
    for ax, label in ((ax1, "throughput (inferences/s)"), (ax2, "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    who = "node" if by_node else "GPU (median over nodes)"
    fig.suptitle(f"{model} — by {who} and backend, concurrency {conc}", fontsize=10)
    ax2.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5), ncol=1 + len(series) // 16)
    return _png(fig)
