"""``agent tune`` against a running Triton: each candidate configuration is loaded
through the model control API (explicit load with a configuration override: the
model's own config as Triton reports it, with max_batch_size, dynamic_batching and
instance_group replaced), without restarting the server, then measured with the
served benchmark's load generator (:class:`agent.bench.served.LoadGenerator`, the
stable-window rule of :func:`agent.bench.measure.measure_until_stable`: its p99 over
the last windows). Before measuring, the served model is checked against the engine
in-process, as ``agent bench --target triton`` does.

The untuned default (what ``agent repo`` writes: one instance, the engine's max
batch, dynamic batching with 100 µs delay and preferred sizes 4, 8, 16, 32) is
measured the same way for comparison. The winner is written back into the repository
(``config.pbtxt`` rendered as ``agent repo`` renders it, with a comment naming the
search, the budget and what was measured) and the model is loaded from its files
again, so the server serves the file's configuration; ``agent serve reload`` serves a
changed file on any later run. Every measured point is a result (schema 1.2,
``tuning`` set)."""

from __future__ import annotations

import contextlib
import copy
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from agent.bench.options import BenchOptions
from agent.config import AgentConfig
from agent.defaults import QUEUE_DELAY_US
from agent.errors import AgentError
from agent.schema import BenchResult, ResultDocument, TuningPoint
from agent.tune.search import Config, Grid, Outcome, Point, Search

@dataclass(frozen=True)
class TuneOptions:
    bench: BenchOptions  # models, formats, url, protocol, engines, windows...
    grid: Grid
    p99_budget_ms: float
    objective: str = "throughput"
    search: str = "quick"
    batch_size: int = 1  # each request's batch (the workload's shape)
    repo: Path | None = None  # where the winner is written (None: not written)


def default_config(max_batch: int) -> Config:
    """What ``agent repo`` writes by default (``agent.defaults``)."""
    return Config(instances=1, max_batch_size=max_batch, queue_delay_us=QUEUE_DELAY_US, preferred="ladder")


def override(base: dict, c: Config) -> dict:
    """Triton's JSON config of the model with ``c``'s batching and instances."""
    cfg = copy.deepcopy(base)
    cfg["max_batch_size"] = c.max_batch_size
    if c.dynamic_batching:
        cfg["dynamic_batching"] = {"preferred_batch_size": list(c.preferred_batch_sizes),
                                   "max_queue_delay_microseconds": c.queue_delay_us}
    else:
        cfg.pop("dynamic_batching", None)
    kind = (base.get("instance_group") or [{}])[0].get("kind", "KIND_CPU")
    cfg["instance_group"] = [{"count": c.instances, "kind": kind}]
    return cfg


def tuning_point(c: Config, search: str, opts: TuneOptions, within: bool, chosen: bool,
                 default: bool = False) -> TuningPoint:
    return TuningPoint(instances=c.instances, max_batch_size=c.max_batch_size, dynamic_batching=c.dynamic_batching,
                       preferred_batch_sizes=list(c.preferred_batch_sizes), queue_delay_us=c.queue_delay_us,
                       search=search, objective=opts.objective, p99_budget_ms=opts.p99_budget_ms,
                       within_budget=within, chosen=chosen, default=default)


class ModelTuner:
    """Loads and measures the configurations of one served model."""

    def __init__(self, api, client, served, opts: TuneOptions, sources, on_point=None) -> None:
        self.api, self.client, self.served, self.opts, self.sources = api, client, served, opts, sources
        self.base = api.model_config(served.name)
        self.loaded: Config | None = None
        self.on_point = on_point

    def load(self, c: Config) -> None:
        if c == self.loaded:
            return
        reason = self.api.load(self.served.name, config=override(self.base, c))
        if reason is None and not self.api.model_ready(self.served.name):
            reason = "not ready after load"
        if reason is not None:
            raise AgentError(f"{self.served.name}: Triton did not load {c.label()}: {reason.splitlines()[0]}")
        self.loaded = c

    def measure(self, c: Config, concurrency: int) -> Point:
        """The served benchmark's measurement of one point (:func:`agent.bench.served.measure_point`)."""
        from agent.bench.served import measure_point

        self.load(c)
        result = measure_point(self.client, self.opts.bench, self.served, self.sources, self.opts.batch_size,
                               concurrency)
        p = Point(c, concurrency, result.throughput_ips, result.latency_ms.p99, result)
        if self.on_point:
            self.on_point(p)
        return p

    def restore(self) -> None:
        """Serve the repository's config.pbtxt again (the chosen one once written back)."""
        reason = self.api.load(self.served.name)
        if reason is not None:
            print(f"warning: {self.served.name}: reload from its config.pbtxt failed: {reason.splitlines()[0]}",
                  file=sys.stderr)
        self.loaded = None


@dataclass
class ModelOutcome:
    name: str
    default: Config
    default_best: Point | None
    outcome: Outcome
    written: Path | None = None


def tune_model(tuner: ModelTuner, opts: TuneOptions, price: float | None) -> ModelOutcome:
    rec = tuner.served.record
    grid = opts.grid
    sizes = tuple(m for m in grid.max_batch_size if m <= rec.max_batch)
    if not sizes:
        raise AgentError(f"{tuner.served.name}: every --max-batch value is above the engine's max batch {rec.max_batch}")
    if opts.batch_size > min(sizes):
        raise AgentError(f"--batch-size {opts.batch_size} is above the smallest max batch size tried ({min(sizes)})")
    grid = Grid(instances=grid.instances, max_batch_size=sizes, queue_delay_us=grid.queue_delay_us,
                preferred=grid.preferred, concurrency=grid.concurrency)
    search = Search(grid, tuner.measure, opts.p99_budget_ms, opts.objective, price)
    default = default_config(rec.max_batch)
    default_best = search.evaluate(default)
    outcome = search.run(opts.search)
    return ModelOutcome(tuner.served.name, default, default_best, outcome)


def results_of(mo: ModelOutcome, opts: TuneOptions) -> list[BenchResult]:
    out = []
    chosen = mo.outcome.chosen
    for p in mo.outcome.points:
        t = tuning_point(p.config, mo.outcome.search, opts, p.p99_ms <= opts.p99_budget_ms,
                         chosen is not None and p is chosen, default=p.config == mo.default)
        out.append(p.extra.model_copy(update={"tuning": t}))
    return out


def tuned_config_text(record, backend: str, c: Config, note: str) -> str:
    """config.pbtxt of ``c``, rendered as ``agent repo`` renders it, with ``note`` on top."""
    from agent.triton.repo import RepoOptions, render_config

    opts = RepoOptions(backend=backend, instances=c.instances, dynamic_batching=c.dynamic_batching,
                       queue_delay_us=c.queue_delay_us or 0, preferred_batch_sizes=c.preferred_batch_sizes)
    text = render_config(record.model_copy(update={"max_batch": c.max_batch_size}), opts)
    return "".join(f"# {line}\n" for line in note.splitlines()) + text


def write_back(repo: Path, mo: ModelOutcome, record, opts: TuneOptions) -> Path:
    from agent.fsutil import atomic_write_text
    from agent.triton.repo import MARKER

    model_dir = Path(repo) / mo.name
    if not (model_dir / "config.pbtxt").is_file():
        raise AgentError(f"--repo {repo}: no {mo.name}/config.pbtxt to write the tuned configuration to")
    try:
        backend = json.loads((model_dir / MARKER).read_text()).get("backend", "python")
    except (OSError, ValueError):
        backend = "python"
    p = mo.outcome.chosen
    d = mo.default_best
    vs = (f"; default ({mo.default.label()}): {d.throughput_ips:.1f} inferences/s at p99 {d.p99_ms:.1f} ms, "
          f"concurrency {d.concurrency}") if d else "; the default met no point of the budget"
    note = (f"Tuned by `agent tune --search {mo.outcome.search} --objective {opts.objective}` under a p99 budget of "
            f"{opts.p99_budget_ms:g} ms (request batch {opts.batch_size}):\n"
            f"{p.config.label()}: {p.throughput_ips:.1f} inferences/s at p99 {p.p99_ms:.1f} ms, "
            f"concurrency {p.concurrency}{vs}.")
    path = model_dir / "config.pbtxt"
    atomic_write_text(path, tuned_config_text(record, backend, p.config, note))
    return path


def run_tune(opts: TuneOptions, config: AgentConfig, on_point=None) -> tuple[ResultDocument, list[ModelOutcome]]:
    from agent.bench.served import _served_models, check_served, served_settings, telemetry_sources
    from agent.facts import node_facts
    from agent.triton.client import TritonAPI, connect, server_metadata

    b = opts.bench
    client = connect(b.url, b.protocol)
    api = TritonAPI(b.url)
    outcomes: list[ModelOutcome] = []
    results: list[BenchResult] = []
    try:
        meta = server_metadata(client, b.protocol)
        served = _served_models(client, b.protocol, b)
        node = node_facts(config)
        node.triton_version = meta.get("version") or node.triton_version
        sources = telemetry_sources(b, config)
        for s in served:
            check_served(client, b.protocol, s, b.engines_dir)
            tuner = ModelTuner(api, client, s, opts, sources, on_point)
            try:
                mo = tune_model(tuner, opts, node.price_per_hour)
                if opts.repo is not None and mo.outcome.chosen is not None:
                    mo.written = write_back(opts.repo, mo, s.record, opts)
            finally:
                tuner.restore()
            outcomes.append(mo)
            results += results_of(mo, opts)
    finally:
        api.close()
        with contextlib.suppress(Exception):  # closing only
            client.close()
    return ResultDocument(target="triton", node=node, settings=served_settings(b), results=results), outcomes
