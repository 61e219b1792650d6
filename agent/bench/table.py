"""``print_results(doc)``: the result document as a Rich table (both targets).

The speedup column shows the interleaved speedup with its 95 % interval
(``2.31x [2.20–2.43]``), green when the whole interval is above 1.05; the
stability column shows each result's coefficient of variation, ⚠ when its
windows were not stable, and a footnote counts the unstable results."""

from __future__ import annotations

from rich.table import Table

from agent.schema import BenchResult, ResultDocument


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def speedup_text(r: BenchResult) -> str:
    sp, lo, hi = r.speedup_vs_eager, r.speedup_ci_low, r.speedup_ci_high
    if sp is None:
        return "-"
    text = f"{sp:.2f}x" + (f" [{lo:.2f}–{hi:.2f}]" if lo is not None and hi is not None else "")
    return f"[green]{text}[/]" if (lo if lo is not None else sp) > 1.05 else text


def stability_text(r: BenchResult) -> str:
    cv = "" if r.cv_pct is None else f" cv {r.cv_pct:.1f}%"
    return f"yes{cv}" if r.stable else f"[yellow]⚠ no{cv}[/]"


def results_table(doc: ResultDocument) -> Table:
    n = doc.node
    where = n.gpu_name or n.cpu or "unknown device"
    t = Table(
        title=f"{doc.target} benchmark on {n.node_name} ({where}, {n.cpu_count or '?'} CPUs) "
              f"torch {n.torch_version or '-'}, onnxruntime {n.onnxruntime_version or '-'}"
              + (f", TensorRT {n.tensorrt_version}" if n.tensorrt_version else ""),
        title_justify="left",
    )
    served = any(r.triton_model or r.concurrency != 1 for r in doc.results)
    server = any(r.server is not None for r in doc.results)
    gpu = any(r.peak_gpu_mem_mb is not None for r in doc.results)
    host = any(r.peak_host_mem_mb is not None for r in doc.results)
    cols = ["model", "format", "prec", "dev", "batch"]
    if served:
        cols.append("conc")
    cols += ["p50 ms", "p90 ms", "p95 ms", "p99 ms", "mean ms", "inf/s", "speedup"]
    if host:
        cols.append("host MB")
    if gpu:
        cols.append("GPU MB")
    if server:
        cols += ["queue us", "compute us"]
    cols.append("stable")
    for c in cols:
        t.add_column(c, justify="left" if c in ("model", "format", "prec", "dev") else "right",
                     no_wrap=c == "model")
    for r in doc.results:
        lat = r.latency_ms
        row = [r.model, r.format, r.precision, r.device, str(r.batch_size)]
        if served:
            row.append(str(r.concurrency))
        row += [_f(lat.p50), _f(lat.p90), _f(lat.p95), _f(lat.p99), _f(lat.mean),
                _f(r.throughput_ips, "{:.1f}"), speedup_text(r)]
        if host:
            row.append(_f(r.peak_host_mem_mb, "{:.0f}"))
        if gpu:
            row.append(_f(r.peak_gpu_mem_mb, "{:.0f}"))
        if server:
            s = r.server
            row += [_f(s.queue_us if s else None, "{:.0f}"),
                    _f((s.compute_input_us + s.compute_infer_us + s.compute_output_us) if s else None,
                       "{:.0f}")]
        row.append(stability_text(r))
        t.add_row(*row)
    return t


def print_results(doc: ResultDocument) -> None:
    """Print to stdout; when stdout is not a terminal (CI logs, pipes) use a wide
    console so the numbers are never truncated."""
    from rich.console import Console

    from agent.ui import console

    out = console if console.is_terminal else Console(width=220)
    out.print(results_table(doc))
    unstable = sum(not r.stable for r in doc.results)
    if unstable:
        out.print(f"[yellow]⚠ {unstable} of {len(doc.results)} results unstable[/]: their last windows' "
                  f"throughputs or p50s differ by more than {doc.settings.stability_pct:g} % (cv = "
                  "coefficient of variation); their absolute figures are indicative"
                  + ("; speedups come from interleaved windows, with their 95 % interval."
                     if any(r.speedup_ci_low is not None for r in doc.results) else "."))
