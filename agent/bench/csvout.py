"""``perf_analyzer_csv(doc)``: a result document as perf_analyzer's CSV (``-f out.csv``).

Same columns, same units (latencies in microseconds), one row per result in
the order model, batch size, concurrency — so a run of ``agent bench --target
triton --csv`` for one model and batch size diffs line by line against
perf_analyzer's file for the same sweep. What perf_analyzer measures that we do
not split (client send/receive) is 0 and folded into "Network+Server
Send/Recv" = mean latency - server queue - server compute, as perf_analyzer
computes that column. For in-process results (no server), the whole mean
latency is "Server Compute Infer"."""

from __future__ import annotations

import io

from agent.csvsafe import number, writer
from agent.schema import ResultDocument

COLUMNS = [
    "Concurrency", "Inferences/Second", "Client Send", "Network+Server Send/Recv", "Server Queue",
    "Server Compute Input", "Server Compute Infer", "Server Compute Output", "Client Recv",
    "p50 latency", "p90 latency", "p95 latency", "p99 latency",
]


def perf_analyzer_csv(doc: ResultDocument) -> str:
    buf = io.StringIO()
    w = writer(buf)  # agent.csvsafe: every cell here is a number (number(): formatted by us, not escaped)
    w.writerow(COLUMNS)
    rows = sorted(doc.results, key=lambda r: (r.triton_model or r.model, r.format, r.batch_size, r.concurrency))
    for r in rows:
        lat = r.latency_ms
        mean_us = lat.mean * 1e3
        s = r.server
        if s is not None:
            queue, c_in, c_inf, c_out = s.queue_us, s.compute_input_us, s.compute_infer_us, s.compute_output_us
            network = max(0.0, mean_us - (queue + c_in + c_inf + c_out))
        elif doc.target == "inprocess":
            queue = c_in = c_out = network = 0.0
            c_inf = mean_us
        else:
            queue = c_in = c_inf = c_out = 0.0
            network = mean_us
        w.writerow([
            r.concurrency, number(r.throughput_ips, ".2f"), 0, round(network), round(queue), round(c_in),
            round(c_inf), round(c_out), 0,
            round(lat.p50 * 1e3), round(lat.p90 * 1e3), round(lat.p95 * 1e3), round(lat.p99 * 1e3),
        ])
    return buf.getvalue()
