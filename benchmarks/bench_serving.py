"""Serving: the agent's load generator against perf_analyzer, and served vs in-process.

One Triton (the bundled CPU tritonserver, python backend) serves the resnet18
ONNX engine; everything below runs against it, batch 1.

1. *Served / in-process* (issue P2): interleaved rounds, one window each per
   round in counterbalanced order (A B C .., .. C B A): the engine run directly
   by agent.runners with its default session (what ``agent bench`` reports),
   the same engine with the served model's ONNX Runtime settings
   (agent.triton.python_model.onnx_session_options), and Triton at each
   concurrency. Each in-process engine runs in a process of its own session,
   as the server does: with the kernel's autogroup scheduling every session
   is one CPU group, so on a busy machine neither side gets a bigger share for
   where it was started. The python backend's hop is Triton's compute time at
   concurrency 1 (which includes the round trip to the stub process) minus the
   in-process latency with the same settings, per round. Per concurrency the ratio served / in-process is the geometric
   mean of the per-round ratios (agent.bench.measure.paired_ratio) with its 95 %
   interval; the best concurrency is the one with the highest served throughput.
2. *Agreement with perf_analyzer* (tritonclient 2.48.0's binary in .venv-pa,
   see ENVIRONMENT.md), per protocol and concurrency: ``--reps`` measurements
   each, alternating agent / perf_analyzer (A B, B A, A B ..). Both measure the
   same way: 3 back-to-back windows of ``--duration`` seconds (perf_analyzer
   sleeps 1.2 x ``--measurement-interval``, so the interval is set to duration /
   1.2), requests counted when they complete inside a window, latency from send
   to response, statistics over the 3 windows; the stability test is relaxed on
   both sides (perf_analyzer ``--stability-percentage 1000 --max-trials 3``)
   so that each side takes exactly 3 windows instead of a run-dependent
   number. The table gives throughput and p99 of both, the ratios agent /
   perf_analyzer (geometric mean over the repetitions, min-max) and the load
   average; ``agreement.json`` has every measurement.

Usage: .venv/bin/python benchmarks/bench_serving.py [--out out/bench-serving]
       [--duration 2] [--reps 3] [--protocols http,grpc] [--concurrency 1,2,4]"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # testing/ (not shipped)

from rich.table import Table  # noqa: E402

from agent.bench.options import BenchOptions  # noqa: E402
from agent.ui import console  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = "resnet18"
ENGINE = f"{MODEL}_onnx"
SERVER_COLUMNS = ("Server Queue", "Server Compute Input", "Server Compute Infer", "Server Compute Output")
RELAXED = 1000.0  # stability percent that any 3 windows pass: exactly 3 windows per measurement


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def gmean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


# ------------------------------------------------------------ perf_analyzer
def pa_env(pa_venv: Path, workdir: Path) -> dict[str, str] | str:
    """perf_analyzer's environment (libb64 / libcudart from nvidia_pytriton.libs), or why not."""
    binary = pa_venv / "bin" / "perf_analyzer"
    if not binary.is_file():
        return f"not installed ({binary}; `make bench-serving` installs it)"
    from agent.triton.server import bundled

    libs = bundled().libs
    linkdir = Path(tempfile.mkdtemp(prefix="pa-libs-", dir=workdir))
    for want, pattern in (("libb64.so.0d", "libb64-*.so.0d"), ("libcudart.so.12", "libcudart-*.so.12*")):
        found = sorted(libs.glob(pattern))
        if not found:
            return f"{pattern} not found in {libs}"
        (linkdir / want).symlink_to(found[0])
    return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join([str(linkdir), os.environ.get("LD_LIBRARY_PATH", "")])}


def perf_analyzer(pa_venv: Path, env: dict, url: str, protocol: str, concurrency: int, duration: float,
                  out: Path) -> dict:
    """One perf_analyzer measurement: its CSV row (microseconds) as a dict."""
    cmd = [str(pa_venv / "bin" / "perf_analyzer"), "-m", ENGINE, "-u", url, "-i", protocol, "-b", "1",
           "--concurrency-range", str(concurrency), "--measurement-interval", str(round(duration * 1000 / 1.2)),
           "--stability-percentage", str(RELAXED), "--max-trials", "3", "--verbose-csv", "-f", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    if r.returncode != 0 or not out.is_file():
        raise RuntimeError(f"perf_analyzer failed (rc {r.returncode}): {(r.stderr or r.stdout).strip()[-300:]}\n"
                           + " ".join(cmd))
    with open(out) as f:
        row = next(csv.DictReader(f))
    return {"ips": float(row["Inferences/Second"]), "p99_ms": float(row["p99 latency"]) / 1e3,
            "p50_ms": float(row["p50 latency"]) / 1e3, "send_us": float(row["Client Send"]),
            "recv_us": float(row["Client Recv"]), "server_infer_us": float(row["Server Compute Infer"]),
            "server_queue_us": float(row["Server Queue"]), "mean_ms": float(row["Avg latency"]) / 1e3,
            "server_ms": sum(float(row[k]) for k in SERVER_COLUMNS) / 1e3, "load": load()}


# --------------------------------------------------------------------- agent
def agent_measure(url: str, protocol: str, served, concurrency: int, duration: float) -> dict:
    """The agent's closed loop (agent.bench.served) for exactly 3 windows."""
    from agent.bench.measure import STABLE_WINDOWS, measure_until_stable
    from agent.bench.served import LoadGenerator, _stats, client_breakdown, window_breakdown
    from agent.triton.client import connect

    windows = []

    def window():
        windows.append(gen.window(duration, None))
        return windows[-1]

    client = connect(url, protocol)
    try:
        with LoadGenerator(url, protocol, served, 1, concurrency,
                           stats=lambda: _stats(client, protocol, served.record.name)) as gen:
            gen.wait_for(concurrency)  # every client connected and answered once
            m = measure_until_stable(window, 1, RELAXED, STABLE_WINDOWS)
    finally:
        client.close()
    c = client_breakdown(gen.used(STABLE_WINDOWS))
    server = window_breakdown(gen.used(STABLE_WINDOWS))
    lat = sorted(x for w in windows[-STABLE_WINDOWS:] for x in w.latencies_s)
    return {"ips": m.throughput_ips, "p99_ms": m.latency_ms.p99, "p50_ms": m.latency_ms.p50,
            "p99_pa_rule_ms": nearest_rank(lat, 99) * 1e3, "requests": m.requests,
            "send_us": c.send_us if c else None, "recv_us": c.recv_us if c else None,
            "server_infer_us": server.compute_infer_us if server else None,
            "server_queue_us": server.queue_us if server else None, "mean_ms": m.latency_ms.mean,
            "server_ms": (server.queue_us + server.compute_input_us + server.compute_infer_us
                          + server.compute_output_us) / 1e3 if server else None, "load": load()}


def nearest_rank(sorted_values: list[float], pct: float) -> float:
    """perf_analyzer's percentile: the sorted sample at index round(pct/100 * (n - 1))."""
    return sorted_values[int(pct / 100 * (len(sorted_values) - 1) + 0.5)]


def agreement(args, urls: dict[str, str], served: dict, env: dict) -> dict:
    results: dict = {}
    for protocol in args.protocols:
        for conc in args.concurrency:
            runs: dict[str, list[dict]] = {"agent": [], "perf_analyzer": []}
            for rep in range(args.reps):
                order = ["agent", "perf_analyzer"] if rep % 2 == 0 else ["perf_analyzer", "agent"]
                for who in order:
                    if who == "agent":
                        runs[who].append(agent_measure(urls[protocol], protocol, served[protocol], conc,
                                                       args.duration))
                    else:
                        runs[who].append(perf_analyzer(args.pa_venv, env, urls[protocol], protocol, conc,
                                                       args.duration, args.out / "perf_analyzer.csv"))
                console.print(f"[dim]{protocol} concurrency {conc} rep {rep + 1}: agent "
                              f"{runs['agent'][-1]['ips']:.2f} / perf_analyzer {runs['perf_analyzer'][-1]['ips']:.2f} "
                              f"inf/s, load {load()}[/]")
            results[f"{protocol}/{conc}"] = runs
    return results


def agreement_table(results: dict) -> tuple[Table, float, float]:
    """One row per protocol and concurrency; "a | b" cells are agent | perf_analyzer."""
    t = Table(title="agent | perf_analyzer on the same server, model, batch 1; ratios agent / perf_analyzer: "
                    "geometric mean (min-max in brackets) over the repetitions", title_justify="left")
    for col in ("protocol", "conc", "inf/s", "inf/s ratio", "p99 ms", "p99 ratio", "p99 ratio (PA's rank rule)",
                "client send/recv us", "server infer ms", "outside server ms", "inf/s ratio at equal server time",
                "load"):
        t.add_column(col, justify="left" if col in ("protocol", "load") else "right")
    worst = worst_equal = 0.0
    for key, runs in results.items():
        protocol, conc = key.split("/")
        a, p = runs["agent"], runs["perf_analyzer"]
        cells = []
        for metric, pa_metric in (("ips", "ips"), ("p99_ms", "p99_ms"), ("p99_pa_rule_ms", "p99_ms")):
            ratios = [x[metric] / y[pa_metric] for x, y in zip(a, p, strict=True)]
            g = gmean(ratios)
            if metric != "p99_pa_rule_ms":
                worst = max(worst, abs(g - 1))
                cells.append(f"{gmean([x[metric] for x in a]):.1f} | {gmean([y[pa_metric] for y in p]):.1f}")
            cells.append(f"{g:.3f} [{min(ratios):.2f}-{max(ratios):.2f}]")

        def mean(side: list[dict], f) -> float:
            return sum(f(x) for x in side) / len(side)

        send = [x["send_us"] for x in a if x["send_us"] is not None]
        client = (f"{sum(send) / len(send):.0f}" if send else "-") + f"/{mean(a, lambda x: x['recv_us']):.0f} | " \
            f"{mean(p, lambda y: y['send_us']):.0f}/{mean(p, lambda y: y['recv_us']):.0f}"
        infer = " | ".join(f"{mean(side, lambda x: x['server_infer_us']) / 1e3:.1f}" for side in (a, p))
        out_a, out_p = (mean(side, lambda x: x["mean_ms"] - x["server_ms"]) for side in (a, p))
        # closed loop: throughput = concurrency / mean latency, mean latency = Triton's own time + the time
        # outside it (client, HTTP/gRPC); at the same server time the generators differ only by the latter
        server = (mean(a, lambda x: x["server_ms"]) + mean(p, lambda y: y["server_ms"])) / 2
        equal = (server + out_p) / (server + out_a)
        worst_equal = max(worst_equal, abs(equal - 1))
        t.add_row(protocol, conc, *cells, client, infer, f"{out_a:.2f} | {out_p:.2f}", f"{equal:.3f}",
                  a[-1]["load"])
    return t, worst, worst_equal


# ---------------------------------------------------------- served/in-process
def _inprocess_worker(conn, engines: Path, served_settings: bool, duration: float) -> None:
    """The engine in its own process and session (as Triton is: on Linux each session is its own
    CPU scheduling group), one window per request on ``conn``."""
    from agent.bench.inprocess import load_and_warm, window_runner
    from agent.build.manifest import load_manifest
    from agent.triton.python_model import onnx_session_options, use_session_options

    os.setsid()
    opts = BenchOptions(models=[MODEL], formats=["onnx"], batch_sizes=[1], engines_dir=engines, warmup=5,
                        window_seconds=duration)
    rec = load_manifest(engines).engines[ENGINE]
    runner, inputs = load_and_warm(MODEL, rec, opts, "cpu")
    if served_settings:
        onnx = engines / next(f for f in rec.files if f.endswith(".onnx"))
        use_session_options(runner, onnx, onnx_session_options())
        window_runner(runner, inputs[1], opts)()  # warm the new session
    run = window_runner(runner, inputs[1], opts)
    conn.send("ready")
    while conn.recv():
        w = run()
        conn.send((w.latencies_s, w.elapsed_s))


class InProcess:
    """A window function backed by :func:`_inprocess_worker` in a spawned process."""

    def __init__(self, engines: Path, served_settings: bool, duration: float) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_inprocess_worker, args=(child, engines, served_settings, duration),
                                daemon=True)
        self.proc.start()
        if self.conn.recv() != "ready":
            raise RuntimeError("in-process worker did not start")

    def __call__(self):
        from agent.bench.measure import Window

        self.conn.send(True)
        return Window(*self.conn.recv())

    def close(self) -> None:
        self.conn.send(False)
        self.proc.join(timeout=30)


def served_vs_inprocess(args, engines: Path, url: str, served) -> tuple[Table, dict]:
    from agent.bench.measure import paired_ratio
    from agent.bench.served import LoadGenerator, _stats, window_breakdown
    from agent.triton.client import connect

    rec = served.record
    workers = [InProcess(engines, False, args.duration), InProcess(engines, True, args.duration)]
    windows = {"in-process (runtime default)": workers[0], "in-process (served ORT settings)": workers[1]}
    client = connect(url, "http")
    server_ms: dict[str, list[float]] = {}  # Triton's compute time per request, per window

    def served_window(conc: int, name: str):
        def run():
            with LoadGenerator(url, "http", served, 1, conc,
                               stats=lambda: _stats(client, "http", rec.name)) as gen:
                gen.wait_for(2 * conc)
                w = gen.window(args.duration, None)
            b = window_breakdown(gen.used(1))
            server_ms.setdefault(name, []).append(
                (b.compute_input_us + b.compute_infer_us + b.compute_output_us) / 1e3)
            return w
        return run

    for c in args.concurrency:
        windows[f"Triton HTTP concurrency {c}"] = served_window(c, f"Triton HTTP concurrency {c}")
    names = list(windows)
    ips: dict[str, list[float]] = {n: [] for n in names}
    mean_ms: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for n in (names if r % 2 == 0 else reversed(names)):
            w = windows[n]()
            ips[n].append(w.throughput)
            mean_ms[n].append(sum(w.latencies_s) / w.requests * 1e3)
    client.close()
    for worker in workers:
        worker.close()
    base_names = names[:2]
    t = Table(title=f"{MODEL} ONNX batch 1: Triton-served (python backend) / in-process, {args.rounds} interleaved "
                    f"rounds of {args.duration:g} s windows; load {load()}", title_justify="left")
    for col in ("measurement", "inf/s (gmean)", *(f"/ {b.split('(')[1][:-1]}" for b in base_names)):
        t.add_column(col, justify="left" if col == "measurement" else "right")
    report: dict = {"rounds": args.rounds, "ips": ips, "ratios": {}}
    for n in names:
        cells = []
        for b in base_names:
            pr = paired_ratio(ips[n], ips[b])
            cells.append(f"{pr.estimate:.2f} [{pr.low:.2f}-{pr.high:.2f}]" if pr.low else f"{pr.estimate:.2f}")
            report["ratios"][f"{n} / {b}"] = [pr.estimate, pr.low, pr.high]
        t.add_row(n, f"{gmean(ips[n]):.1f}", *cells)
    served_names = names[2:]
    best = max(served_names, key=lambda n: gmean(ips[n]))
    report["best"] = best
    # the python backend's hop at concurrency 1: Triton's compute time (input + infer + output, which
    # includes the round trip to the stub process) minus the same engine's in-process latency with the
    # same session settings, per round; and the client's time outside the server
    one = f"Triton HTTP concurrency {min(args.concurrency)}"
    hop = sorted(s_ - i for s_, i in zip(server_ms[one], mean_ms[names[1]], strict=True))
    outside = sorted(m - s_ for m, s_ in zip(mean_ms[one], server_ms[one], strict=True))
    report["hop_ms"], report["outside_server_ms"] = hop, outside
    report["summary"] = (f"python-backend hop at concurrency {min(args.concurrency)}: server compute - in-process "
                         f"latency = {hop[len(hop) // 2]:.2f} ms median per request [{hop[0]:.2f} to {hop[-1]:.2f}] "
                         f"of {gmean(mean_ms[names[1]]):.1f} ms; HTTP + client outside the server "
                         f"{outside[len(outside) // 2]:.2f} ms")
    return t, report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench-serving")
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per measurement window")
    ap.add_argument("--reps", type=int, default=3, help="measurements per side, per protocol and concurrency")
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds of served vs in-process")
    ap.add_argument("--protocols", default="http,grpc")
    ap.add_argument("--concurrency", default="1,2,4")
    ap.add_argument("--pa-venv", type=Path, default=ROOT / ".venv-pa")
    args = ap.parse_args()
    console.width = max(console.width, 190)  # the agreement table is wide; a log file or CI has no terminal
    args.protocols = [p for p in args.protocols.split(",") if p]
    args.concurrency = [int(c) for c in args.concurrency.split(",")]

    from agent.bench.served import _served_models
    from agent.build.pipeline import BuildOptions, failures_error, run_build
    from agent.triton.client import connect
    from agent.triton.repo import RepoOptions, write_repository
    from agent.triton.server import ServerSettings, start, stop
    from testing.ports import free_port

    args.out.mkdir(parents=True, exist_ok=True)
    engines = args.out / "engines"
    err = failures_error(run_build(BuildOptions(models=[MODEL], out=engines, formats=["onnx"], max_batch=8)))
    if err:
        raise err
    repo = engines / "triton-repo"
    write_repository(engines, repo, RepoOptions(backend="python", models=(MODEL,), formats=("onnx",)))
    env = pa_env(args.pa_venv, args.out)
    s = ServerSettings(repo=repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                       state_dir=args.out / "triton-state")
    urls = {"http": f"127.0.0.1:{s.http_port}", "grpc": f"127.0.0.1:{s.grpc_port}"}
    console.print(f"load average at start: {load()}")
    try:
        started = start(s, timeout=180)
        if started.report.failed:
            raise started.report.error()
        served = {}
        for protocol in ("http", *args.protocols):
            client = connect(urls[protocol], protocol)
            opts = BenchOptions(models=[MODEL], formats=["onnx"], batch_sizes=[1], engines_dir=engines,
                                url=urls[protocol], protocol=protocol)
            served[protocol] = _served_models(client, protocol, opts)[0]
            client.close()
        p2_table, p2 = served_vs_inprocess(args, engines, urls["http"], served["http"])
        console.print(p2_table)
        console.print(p2["summary"])
        console.print(f"served / in-process at the best concurrency ({p2['best']}): "
                      + ", ".join(f"{v[0]:.2f} vs {k.split(' / ')[1]}" for k, v in p2["ratios"].items()
                                  if k.startswith(p2["best"])))
        results = None
        if isinstance(env, dict):
            results = agreement(args, urls, served, env)
    finally:
        stop(s, quiet=True)
    if results is None:
        console.print(f"perf_analyzer: {env}")
    else:
        table, worst, worst_equal = agreement_table(results)
        console.print(table)
        console.print(f"agreement: the agent's throughput and p99 are within {worst * 100:.1f} % of perf_analyzer's "
                      f"(worst geometric-mean ratio over protocols and concurrencies; the bar is 5 %); at equal "
                      f"server time their throughputs are within {worst_equal * 100:.1f} %")
    (args.out / "agreement.json").write_text(json.dumps({"served_vs_inprocess": p2, "agreement": results},
                                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
