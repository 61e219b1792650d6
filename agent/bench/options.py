from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class BenchOptions:
    """Everything ``agent bench`` was asked for, already validated for syntax."""

    models: list[str] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    precision: str = "fp32"
    engines_dir: Path = Path("engines")
    warmup: int = 5
    window_seconds: float = 1.0
    iterations: int | None = None
    stability_pct: float = 10.0
    max_windows: int = 8
    url: str = "127.0.0.1:8000"
    protocol: str = "http"
    concurrency: list[int] = field(default_factory=lambda: [1])
    rounds: int | None = None  # in-process: exact interleaved rounds (None: until stable, <= max_windows)
    # MLPerf LoadGen scenario (agent.bench.scenarios); None: the windowed benchmark
    scenario: str | None = None
    target_latency_ms: float | None = None  # server latency bound (LoadGen default: 15 ms at p99)
    min_duration_s: float | None = None  # LoadGen default: 600 s
    min_queries: int | None = None  # LoadGen default: per scenario (mlperf.conf)
    server_qps: float | None = None  # fixed server_target_qps instead of the search
    server_steps: int = 8  # LoadGen runs the server QPS search may make
    log_dir: Path | None = None  # LoadGen logs (default: <engines>/../bench-logs)
    metrics_url: str | None = None  # Triton's metrics endpoint (default: the agent-started server's, else host:8002)
    input: str = "tensor"  # "images": encoded images through the preprocessing (agent.classify)
    images: list[Path] = field(default_factory=list)  # --input images: files (default: a synthetic photo-sized JPEG)

    def image_payloads(self) -> list[bytes]:
        """The encoded images of ``--input images``."""
        from agent.classify.imagenet import synthetic_jpeg
        from agent.errors import AgentError

        out = []
        for p in self.images:
            try:
                out.append(Path(p).read_bytes())
            except OSError as e:
                raise AgentError(f"cannot read image {p}: {e.strerror or e}") from None
        return out or [synthetic_jpeg()]
