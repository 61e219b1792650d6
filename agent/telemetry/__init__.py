"""Telemetry beside every measurement: Triton's Prometheus metrics (``triton_metrics``),
the device through NVML or psutil (``device``, ``nvml``)."""
