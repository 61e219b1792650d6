"""``print_results(doc)``: the result document as a Rich table (both targets)."""

from __future__ import annotations

from rich.table import Table

from agent.schema import ResultDocument


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


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
        sp = r.speedup_vs_eager
        row += [_f(lat.p50), _f(lat.p90), _f(lat.p95), _f(lat.p99), _f(lat.mean),
                _f(r.throughput_ips, "{:.1f}"),
                "-" if sp is None else (f"[green]{sp:.2f}x[/]" if sp > 1.05 else f"{sp:.2f}x")]
        if host:
            row.append(_f(r.peak_host_mem_mb, "{:.0f}"))
        if gpu:
            row.append(_f(r.peak_gpu_mem_mb, "{:.0f}"))
        if server:
            s = r.server
            row += [_f(s.queue_us if s else None, "{:.0f}"),
                    _f((s.compute_input_us + s.compute_infer_us + s.compute_output_us) if s else None,
                       "{:.0f}")]
        row.append("yes" if r.stable else "[yellow]no[/]")
        t.add_row(*row)
    return t


def print_results(doc: ResultDocument) -> None:
    """Print to stdout; when stdout is not a terminal (CI logs, pipes) use a wide
    console so the numbers are never truncated."""
    from rich.console import Console

    from agent.ui import console

    out = console if console.is_terminal else Console(width=220)
    out.print(results_table(doc))
