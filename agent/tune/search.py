"""The configuration search of ``agent tune``, independent of Triton: a grid of serving
configurations, a ``measure(config, concurrency) -> Point`` function, and two ways to
walk the grid.

A configuration is scored by its best point within the p99 budget: for each
configuration the client concurrency is raised along ``grid.concurrency`` (as Model
Analyzer sweeps perf_analyzer's concurrency) until p99 exceeds the budget or throughput
stops growing by ``MIN_GAIN``; the best point within budget is the configuration's
value under the objective (throughput: inferences/s; cost: USD per million inferences
at the node's price, the same winner on one node, kept for the fleet's comparison).

* ``brute``: every configuration of the grid.
* ``quick`` (in the spirit of Model Analyzer's quick search): hill-climbing over the
  grid's axes (instances, max batch size, queue delay, preferred batch sizes). From the
  smallest configuration, each step measures the neighbours one step up each open axis
  and moves to the best of them if it beats the current one by ``MIN_GAIN``; an axis whose
  neighbour has no point within budget, or does not improve, is closed. The climb stops
  when every axis is closed or no neighbour improves.

Every measurement is cached by (configuration, concurrency), so no point is measured
twice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from agent.defaults import PREFERRED_BATCH_SIZES

MIN_GAIN = 0.05  # a step counts as an improvement above +5 % (Model Analyzer's default)
AXES = ("instances", "max_batch_size", "queue_delay_us", "preferred")
# no preferred batch sizes | [max_batch_size] | `agent repo`'s default: PREFERRED_BATCH_SIZES up to max_batch_size
PREFERRED = ("none", "max", "ladder")


@dataclass(frozen=True, order=True)
class Config:
    """One serving configuration of a model. ``queue_delay_us`` None: no dynamic batching."""

    instances: int = 1
    max_batch_size: int = 1
    queue_delay_us: int | None = None
    preferred: str = "none"

    def __post_init__(self) -> None:  # preferred sizes only mean something with dynamic batching
        if self.queue_delay_us is None or self.max_batch_size == 1:
            object.__setattr__(self, "preferred", "none")

    @property
    def dynamic_batching(self) -> bool:
        return self.queue_delay_us is not None

    @property
    def preferred_batch_sizes(self) -> tuple[int, ...]:
        if not self.dynamic_batching or self.preferred == "none":
            return ()
        if self.preferred == "max":
            return (self.max_batch_size,)
        return tuple(b for b in PREFERRED_BATCH_SIZES if b <= self.max_batch_size)

    def label(self) -> str:
        return config_label(self.instances, self.max_batch_size, self.queue_delay_us, self.preferred_batch_sizes)


def config_label(instances: int, max_batch_size: int, queue_delay_us: int | None,
                 preferred_batch_sizes: tuple[int, ...] | list[int]) -> str:
    """A serving configuration in words (the CLI, config.pbtxt's note, the fleet report)."""
    db = "off" if queue_delay_us is None else f"{queue_delay_us}us"
    pref = f" pref {list(preferred_batch_sizes)}" if preferred_batch_sizes else ""
    return f"{instances} inst, max batch {max_batch_size}, dyn batching {db}{pref}"


@dataclass(frozen=True)
class Point:
    config: Config
    concurrency: int
    throughput_ips: float
    p99_ms: float
    extra: object = None  # whatever the measure function keeps (the BenchResult)


@dataclass(frozen=True)
class Grid:
    instances: tuple[int, ...] = (1, 2)
    max_batch_size: tuple[int, ...] = (1, 4, 8)
    queue_delay_us: tuple[int | None, ...] = (None, 0, 500, 2000)
    preferred: tuple[str, ...] = ("none",)
    concurrency: tuple[int, ...] = (1, 2, 4, 8)

    def __post_init__(self) -> None:
        for axis in (*AXES, "concurrency"):
            values = getattr(self, axis)
            if not values:
                raise ValueError(f"the grid's {axis} is empty")
        if any(p not in PREFERRED for p in self.preferred):
            raise ValueError(f"preferred batch sizes: use {', '.join(PREFERRED)}")
        if min(self.instances) < 1 or min(self.max_batch_size) < 1 or min(self.concurrency) < 1:
            raise ValueError("instances, max batch sizes and concurrency must be >= 1")
        if any(d is not None and d < 0 for d in self.queue_delay_us):
            raise ValueError("queue delays must be >= 0 microseconds")

    def configs(self) -> list[Config]:
        out = {Config(i, m, q, p) for i in self.instances for m in self.max_batch_size
               for q in self.queue_delay_us for p in self.preferred}
        return sorted(out, key=self.position)

    def start(self) -> Config:
        return Config(self.instances[0], self.max_batch_size[0], self.queue_delay_us[0], self.preferred[0])

    def position(self, c: Config) -> tuple[int, ...]:
        values = [getattr(self, a) for a in AXES]
        return tuple(v.index(getattr(c, a)) if getattr(c, a) in v else 0 for a, v in zip(AXES, values))

    def step(self, c: Config, axis: str) -> Config | None:
        """The configuration one step up ``axis`` (None at the grid's edge). Batching needs
        both a max batch size above 1 and dynamic batching: a step that gives one without
        the other takes the other's first step too (as Model Analyzer's search turns dynamic
        batching on with the max batch size), else a climb from "no batching" would see no
        gain along either axis alone."""
        values = getattr(self, axis)
        i = self.position(c)[AXES.index(axis)] + 1
        if i >= len(values):
            return None
        nxt = replace(c, **{axis: values[i]})
        delays = [d for d in self.queue_delay_us if d is not None]
        if nxt.max_batch_size > 1 and nxt.queue_delay_us is None and delays:
            nxt = replace(nxt, queue_delay_us=delays[0])
        if nxt.dynamic_batching and nxt.max_batch_size == 1:
            bigger = [m for m in self.max_batch_size if m > 1]
            if bigger:
                nxt = replace(nxt, max_batch_size=bigger[0])
        return nxt


@dataclass
class Outcome:
    """What a search measured, in order, and what it chose (None: nothing met the budget)."""

    search: str
    points: list[Point] = field(default_factory=list)
    best: dict[Config, Point | None] = field(default_factory=dict)  # config -> its best point within budget
    chosen: Point | None = None


Measure = Callable[[Config, int], Point]


class Search:
    def __init__(self, grid: Grid, measure: Measure, p99_budget_ms: float, objective: str = "throughput",
                 price_per_hour: float | None = None) -> None:
        if objective not in ("throughput", "cost"):
            raise ValueError(f"unknown objective {objective!r}: use throughput or cost")
        if not p99_budget_ms > 0:
            raise ValueError("the p99 budget must be > 0 ms")
        self.grid, self.measure, self.budget = grid, measure, p99_budget_ms
        self.objective, self.price = objective, price_per_hour
        self.cache: dict[tuple[Config, int], Point] = {}
        self.outcome = Outcome(search="")

    # ----------------------------------------------------------- scoring
    def score(self, p: Point | None) -> float:
        """Higher is better: inferences/s, or minus the cost per million inferences."""
        if p is None or p.throughput_ips <= 0:
            return float("-inf")
        if self.objective == "cost" and self.price is not None:
            return -self.price / (p.throughput_ips * 3600.0) * 1e6
        return p.throughput_ips

    def within(self, p: Point) -> bool:
        return p.p99_ms <= self.budget

    def _point(self, c: Config, conc: int) -> Point:
        key = (c, conc)
        if key not in self.cache:
            p = self.measure(c, conc)
            self.cache[key] = p
            self.outcome.points.append(p)
        return self.cache[key]

    def evaluate(self, c: Config) -> Point | None:
        """The configuration's best point within budget: concurrency raised until p99
        leaves the budget or throughput gains less than MIN_GAIN."""
        if c in self.outcome.best:
            return self.outcome.best[c]
        best: Point | None = None
        prev = 0.0
        for conc in self.grid.concurrency:
            p = self._point(c, conc)
            if not self.within(p):
                break
            if best is None or self.score(p) > self.score(best):
                best = p
            if prev and p.throughput_ips < prev * (1 + MIN_GAIN):
                break
            prev = p.throughput_ips
        self.outcome.best[c] = best
        return best

    def better(self, a: Point | None, b: Point | None) -> bool:
        """``a`` beats ``b`` by more than MIN_GAIN (any point within budget beats none)."""
        sa, sb = self.score(a), self.score(b)
        if sb == float("-inf"):
            return sa > sb
        if sa == float("-inf"):
            return False
        if self.objective == "cost" and self.price is not None:
            return -sa < -sb * (1 - MIN_GAIN)
        return sa > sb * (1 + MIN_GAIN)

    # ---------------------------------------------------------- searches
    def brute(self) -> Outcome:
        self.outcome.search = "brute"
        for c in self.grid.configs():
            self.evaluate(c)
        return self._choose()

    def quick(self) -> Outcome:
        self.outcome.search = "quick"
        current = self.grid.start()
        here = self.evaluate(current)
        open_axes = [a for a in AXES if len(getattr(self.grid, a)) > 1]
        while open_axes:
            moves = []
            for axis in list(open_axes):
                nxt = self.grid.step(current, axis)
                if nxt is None:
                    open_axes.remove(axis)
                    continue
                p = self.evaluate(nxt)
                if p is None or not self.better(p, here):
                    open_axes.remove(axis)  # over budget, or no gain this way
                else:
                    moves.append((self.score(p), axis, nxt, p))
            if not moves:
                break
            _, _axis, current, here = max(moves, key=lambda m: m[0])
        return self._choose()

    def run(self, how: str) -> Outcome:
        if how == "brute":
            return self.brute()
        if how == "quick":
            return self.quick()
        raise ValueError(f"unknown search {how!r}: use quick or brute")

    def _choose(self) -> Outcome:
        candidates = [p for p in self.outcome.best.values() if p is not None]
        # ties: the smaller configuration (fewer instances, smaller batch, shorter delay)
        self.outcome.chosen = max(candidates, key=lambda p: (self.score(p), [-x for x in self.grid.position(p.config)]),
                                  default=None)
        return self.outcome
