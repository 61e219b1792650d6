"""Telemetry beside the measurements: Triton's Prometheus metrics read from a real
tritonserver (the bundled CPU build), psutil CPU/RSS of real processes, and NVML —
on a GPU when one is present (marker ``gpu``), otherwise only its arithmetic on
hand-written values in NVML's units (labelled as such below)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from agent.telemetry import device, nvml, triton_metrics

# Identity model for the python backend: the server's own counters are the point here,
# not an engine, so the test needs no build.
IDENTITY_CONFIG = """name: "ident"
backend: "python"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""
IDENTITY_MODEL = """import triton_python_backend_utils as pb_utils
class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy())])
                for r in requests]
"""

# Captured from tritonserver 2.51.0 (nvidia-pytriton 0.7.0, --allow-cpu-metrics) after 5
# requests; the nv_gpu_* lines are written in the format Triton uses on GPU servers.
METRICS_TEXT = """# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="ident",version="1"} 5
nv_inference_request_success{model="other",version="1"} 99
# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="ident",reason="OTHER",version="1"} 0
# HELP nv_inference_count Number of inferences performed (does not include cached requests)
# TYPE nv_inference_count counter
nv_inference_count{model="ident",version="1"} 10
# HELP nv_inference_exec_count Number of model executions performed (does not include cached requests)
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="ident",version="1"} 5
# HELP nv_inference_queue_duration_us Cumulative inference queuing duration in microseconds
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="ident",version="1"} 885
# HELP nv_cpu_utilization CPU utilization rate [0.0 - 1.0]
# TYPE nv_cpu_utilization gauge
nv_cpu_utilization 0.2804232804232804
# HELP nv_cpu_memory_used_bytes CPU used memory (RAM), in bytes
# TYPE nv_cpu_memory_used_bytes gauge
nv_cpu_memory_used_bytes 670961664
# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-a"} 0.5
nv_gpu_utilization{gpu_uuid="GPU-b"} 0.7
# HELP nv_gpu_power_usage GPU power usage in watts
# TYPE nv_gpu_power_usage gauge
nv_gpu_power_usage{gpu_uuid="GPU-a"} 120.5
nv_gpu_power_usage{gpu_uuid="GPU-b"} 100
"""


def test_triton_metrics_text_is_parsed_per_model_and_gpus_combined():
    counters, gauges = triton_metrics.parse(METRICS_TEXT, "ident")
    assert counters == {"request_success": 5, "request_failure": 0, "inference_count": 10, "exec_count": 5,
                        "queue_us": 885}
    assert gauges["gpu_utilization_pct"] == pytest.approx(60.0)  # mean over GPUs
    assert gauges["gpu_power_w"] == pytest.approx(220.5)  # sum over GPUs
    assert gauges["cpu_utilization_pct"] == pytest.approx(28.04, abs=0.01)
    assert gauges["cpu_memory_used_mb"] == pytest.approx(670961664 / 2**20)
    assert triton_metrics.metrics_url("127.0.0.1:8002") == "http://127.0.0.1:8002/metrics"


def test_nvml_arithmetic_on_hand_written_values():
    """NOT a GPU measurement: values typed in NVML's units (%, bytes, milliwatts, MHz, °C)
    to check the conversions and the summary (means; peaks of memory, power, temperature)."""
    samples = [nvml.reading(40, 2 * 2**30, 150_000, 1710, 61), nvml.reading(80, 3 * 2**30, 250_000, 1890, 65),
               nvml.reading(60, 2 * 2**30, None, None, None)]  # power/clock not supported on this read
    t = device.summarize_gpu(samples, 0.1)
    assert t.source == "nvml" and t.samples == 3 and t.interval_ms == pytest.approx(100)
    assert t.gpu_utilization_pct == pytest.approx(60.0)
    assert t.gpu_memory_used_mb == pytest.approx(3072.0)
    assert t.gpu_power_w == pytest.approx(200.0) and t.gpu_power_max_w == pytest.approx(250.0)
    assert t.sm_clock_mhz == pytest.approx(1800.0) and t.gpu_temperature_c == pytest.approx(65.0)
    assert device.summarize_gpu([], 0.1) is None


def test_cpu_recorder_counts_only_its_spans():
    """psutil: CPU time over the spans' wall time (exact) and peak RSS; a busy span
    and an idle span measured separately, and spans that add up."""
    def spin(seconds: float) -> None:
        end = time.perf_counter() + seconds
        x = 0
        while time.perf_counter() < end:
            x += 1

    busy, idle = device.DeviceRecorder(), device.DeviceRecorder()
    with busy:
        spin(0.6)
    with idle:
        time.sleep(0.6)
    time.sleep(0.3)  # outside any span: not counted
    with busy:
        spin(0.4)
    b, i = busy.result(), idle.result()
    assert b.source == i.source == "psutil" and b.rss_mb > 10 and b.samples >= 2
    assert i.cpu_utilization_pct < 10, i
    assert b.cpu_utilization_pct > max(20.0, 3 * i.cpu_utilization_pct), (b, i)
    assert busy.wall_s == pytest.approx(1.0, abs=0.5)


@pytest.mark.gpu
def test_nvml_samples_a_real_gpu():
    if not nvml.available():
        pytest.skip("no NVIDIA GPU/driver here (NVML does not load): run `make test-gpu` on a GPU node")
    facts = nvml.facts()
    assert facts["name"] and facts["driver"] and int(facts["count"]) >= 1
    rec = device.DeviceRecorder(gpu=True)
    with rec:
        time.sleep(0.3)
    t = rec.result()
    assert t.source == "nvml" and t.samples >= 1 and t.gpu_memory_used_mb > 0
    assert 0 <= t.gpu_utilization_pct <= 100


@pytest.mark.slow
@pytest.mark.triton
@pytest.mark.timeout(300)
def test_server_side_counts_match_the_client_and_split_fits_in_its_latency(tmp_path: Path):
    """A real tritonserver: over a window the server's request count equals the client's,
    queue + compute <= the server's request time <= the client's mean latency, and the
    server's CPU gauge (--allow-cpu-metrics) is read."""
    import tritonclient.http as th

    from agent.triton.server import ServerSettings, start, stop
    from testing.ports import free_port

    repo = tmp_path / "repo"
    (repo / "ident" / "1").mkdir(parents=True)
    (repo / "ident" / "config.pbtxt").write_text(IDENTITY_CONFIG)
    (repo / "ident" / "1" / "model.py").write_text(IDENTITY_MODEL)
    s = ServerSettings(repo=repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                       state_dir=tmp_path / "state")
    try:
        started = start(s, timeout=180)
        assert not started.report.failed
        client = th.InferenceServerClient(f"127.0.0.1:{s.http_port}")
        client.load_model("ident")
        x = th.InferInput("x", [2, 4], "FP32")
        x.set_data_from_numpy(np.ones((2, 4), np.float32))
        client.infer("ident", [x])  # outside the window
        rec = triton_metrics.ServerMetricsRecorder(f"127.0.0.1:{s.metrics_port}", "ident", interval_s=0.2)
        server_tree = device.DeviceRecorder(pids=[started.pid])  # tritonserver + its python stub
        assert len(device._tree([started.pid])) >= 2
        latencies = []
        for _ in range(2):  # two spans add up
            with rec, server_tree:
                for _ in range(15):
                    t = time.perf_counter()
                    client.infer("ident", [x])
                    latencies.append(time.perf_counter() - t)
        client.infer("ident", [x])  # outside again
        m = rec.result()
        assert m.request_success == len(latencies) == 30 and m.request_failure == 0
        assert m.inference_count == 60 and m.exec_count == 30
        compute = m.compute_input_us + m.compute_infer_us + m.compute_output_us
        assert 0 < m.queue_us + compute <= m.request_us * 1.01
        assert m.request_us <= np.mean(latencies) * 1e6
        assert m.cpu_utilization_pct is not None and m.cpu_memory_used_mb > 0 and m.scrapes >= 4
        assert m.gpu_utilization_pct is None  # a CPU server reports no nv_gpu_*
        st = server_tree.result()
        # server + stub: memory always; CPU time in 10 ms ticks, which 30 identity requests may not reach
        assert st.source == "psutil" and st.samples >= 2 and st.cpu_utilization_pct >= 0 and st.rss_mb > 50
    finally:
        stop(s, quiet=True)


def test_client_counts_bound_the_span_the_server_snapshot_covers():
    """Triton snapshots its counters somewhere between a scrape's sending and its answer's
    arrival: the client's count over the narrowest span (first answer .. last scrape sent)
    and over the widest (first scrape sent .. last answer) bound the server's count. Times
    are hand-written perf_counter values."""
    rec = triton_metrics.ServerMetricsRecorder("127.0.0.1:1", "m", marks=True)
    rec.start_sent, rec.span_start, rec.end_sent, rec.span_end = 1.0, 2.0, 5.0, 6.0
    rec.count_client([0.5, 1.5, 3.0, 4.0, 5.5, 7.0])
    assert (rec.client_requests, rec.client_requests_max) == (2, 4)
    rec.counters.update(request_success=3, inference_count=3, exec_count=3)
    m = rec.result()
    assert m.client_requests <= m.request_success <= m.client_requests_max
