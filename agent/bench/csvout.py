"""``perf_analyzer_csv(doc)``: a result document as perf_analyzer's CSV (``-f out.csv``).

Same columns, same units (microseconds), same arithmetic, one row per result in
the order model, batch size, concurrency — so a run of ``agent bench --target
triton --csv-file`` for one model and batch size diffs line by line against
perf_analyzer's file for the same sweep:

- "Client Send" / "Client Recv": the client's own phases per request
  (``BenchResult.client``; 0 where not measured, e.g. gRPC send);
- "Server Queue" / "Server Compute Input|Infer|Output": Triton's statistics
  over the measured windows (``BenchResult.server``);
- "Network+Server Send/Recv" = mean latency - client send - client recv -
  server queue - server compute, capped at 0 (what the server's counters do
  not cover: the network and Triton's HTTP/gRPC front end);
- ``verbose=True`` (perf_analyzer's ``--verbose-csv``) adds "Avg latency",
  "request/response" (send + recv) and "response wait" (mean latency - send -
  recv).

For in-process results (no server), the whole mean latency is "Server
Compute Infer"."""

from __future__ import annotations

import io

from agent.csvsafe import number, writer
from agent.schema import ResultDocument

COLUMNS = [
    "Concurrency", "Inferences/Second", "Client Send", "Network+Server Send/Recv", "Server Queue",
    "Server Compute Input", "Server Compute Infer", "Server Compute Output", "Client Recv",
    "p50 latency", "p90 latency", "p95 latency", "p99 latency",
]
VERBOSE_COLUMNS = ["Avg latency", "request/response", "response wait"]


def perf_analyzer_csv(doc: ResultDocument, verbose: bool = False) -> str:
    buf = io.StringIO()
    w = writer(buf)  # agent.csvsafe: every cell here is a number (number(): formatted by us, not escaped)
    w.writerow(COLUMNS + (VERBOSE_COLUMNS if verbose else []))
    rows = sorted(doc.results, key=lambda r: (r.triton_model or r.model, r.format, r.batch_size, r.concurrency))
    for r in rows:
        lat = r.latency_ms
        mean_us = lat.mean * 1e3
        c = r.client
        send = (c.send_us or 0.0) if c else 0.0
        recv = (c.recv_us or 0.0) if c else 0.0
        wait = max(0.0, mean_us - send - recv)
        s = r.server
        if s is not None:
            queue, c_in, c_inf, c_out = s.queue_us, s.compute_input_us, s.compute_infer_us, s.compute_output_us
            network = max(0.0, wait - (queue + c_in + c_inf + c_out))
        elif doc.target == "inprocess":
            queue = c_in = c_out = network = 0.0
            c_inf = mean_us
        else:
            queue = c_in = c_inf = c_out = 0.0
            network = wait
        row = [
            r.concurrency, number(r.throughput_ips, ".2f"), round(send), round(network), round(queue), round(c_in),
            round(c_inf), round(c_out), round(recv),
            round(lat.p50 * 1e3), round(lat.p90 * 1e3), round(lat.p95 * 1e3), round(lat.p99 * 1e3),
        ]
        if verbose:
            row += [round(mean_us), round(send + recv), round(wait)]
        w.writerow(row)
    return buf.getvalue()
