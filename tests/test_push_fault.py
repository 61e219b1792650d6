"""Fault test: several pusher processes keep producing and pushing results
while the collector is stopped (SIGTERM and SIGKILL) and restarted several
times. Every document must arrive exactly once, and every spool must end empty."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collector_support import *  # noqa: E402,F403  (fixtures)
from collector_support import ROOT, Collector, agent_env, free_port  # noqa: E402

pytestmark = pytest.mark.slow

PUSHER = r"""
import sys, time
from agent.config import load_config
from agent.errors import AgentError
from testing.synthetic_fleet import make_document, make_node
from agent.collector.push import push_spool, spool_document
node, count, url = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cfg = load_config()
for k in range(count):
    doc = make_document(make_node(node), models=("resnet18",), formats=("eager", "onnx"),
                        batch_sizes=(1,), seed=k * 1000 + node)
    spool_document(doc, cfg)
    print(doc.id, flush=True)
    try:
        push_spool(cfg, collector_url=url, timeout=1.0)
    except AgentError:
        pass
    time.sleep(0.15)
push_spool(cfg, collector_url=url, retry_for=120, timeout=3.0)
print("done", flush=True)
"""


def test_concurrent_pushers_survive_collector_restarts_exactly_once(db_url, tmp_path):
    from sqlalchemy import func, select

    from agent.collector.db import make_engine
    from agent.collector.tables import results, runs

    c = Collector(db_url, tmp_path / "collector.log", port=free_port())
    # pushers 0..3 have their own spools; 4 and 5 share one node's spool (the lock's case)
    spools = {i: tmp_path / f"state-{min(i, 4)}" for i in range(6)}
    per_pusher = 12
    procs = []
    for i, state in spools.items():
        env = agent_env(INFERFLEET_STATE_DIR=str(state))
        procs.append(subprocess.Popen([sys.executable, "-c", PUSHER, str(i), str(per_pusher), c.url],
                                      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    rng = random.Random(4)
    try:
        for cycle in range(4):  # down, up, down (TERM / KILL alternately), ...
            time.sleep(rng.uniform(0.8, 1.6))
            c.start()
            time.sleep(rng.uniform(0.8, 1.6))
            if cycle % 2:
                c.proc.kill()
                c.proc.wait(timeout=10)
                c.proc = None
            else:
                c.stop()
        c.start()
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        c.stop()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert out.strip().endswith("done")
    sent = [line for out, _ in outs for line in out.split() if line != "done"]
    assert len(sent) == len(set(sent)) == 6 * per_pusher

    engine = make_engine(db_url)
    with engine.connect() as conn:
        stored = [r[0] for r in conn.execute(select(runs.c.id))]
        result_rows = conn.execute(select(func.count()).select_from(results)).scalar()
    engine.dispose()
    assert sorted(stored) == sorted(sent)  # every one arrived, none twice
    assert result_rows == 2 * len(sent)  # and none of their rows were written twice
    for state in set(spools.values()):
        assert list((state / "spool").glob("*.json")) == []
        assert not (state / "spool" / "dead-letter").exists()
