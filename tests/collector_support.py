"""Shared fixtures for the collector, push and fleet-report tests: a real
collector (uvicorn in a subprocess on a free loopback port) and a real
PostgreSQL cluster from scripts/postgres.sh. Import with
``from collector_support import *`` after putting this directory on sys.path."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from testing.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-token-" + uuid.uuid4().hex
TOKEN_ENV = "INFERFLEET_TEST_COLLECTOR_TOKEN"

__all__ = ["ROOT", "TOKEN", "TOKEN_ENV", "Collector", "free_port", "postgres_server", "db_url",
           "collector", "agent_env", "run_agent", "new_postgres_db"]




def agent_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERFLEET_")}
    env[TOKEN_ENV] = TOKEN
    env["INFERFLEET_COLLECTOR_TOKEN_ENV"] = TOKEN_ENV
    env.update(extra)
    return env


def run_agent(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", *args], cwd=ROOT, env=env or agent_env(),
                          capture_output=True, text=True, timeout=timeout)


class Collector:
    """`agent collector serve` for real, stoppable and restartable on the same port."""

    def __init__(self, db: str, log: Path, port: int | None = None, max_body: int | None = None,
                 token: str = TOKEN, read_token: str | None = None, extra_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        self.db, self.log, self.port = db, log, port or free_port()
        self.max_body, self.token, self.read_token = max_body, token, read_token
        self.extra_args, self.extra_env = extra_args, env or {}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Collector:
        args = [sys.executable, "-m", "agent", "collector", "serve", "--db", self.db,
                "--port", str(self.port), "--token-env", TOKEN_ENV]
        if self.max_body:
            args += ["--max-body-bytes", str(self.max_body)]
        args += list(self.extra_args)
        env = agent_env(**self.extra_env)
        env[TOKEN_ENV] = self.token
        if self.read_token:
            env["INFERFLEET_COLLECTOR_READ_TOKEN"] = self.read_token
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"collector did not become healthy: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def post(self, body: bytes | str, token: str | None = TOKEN, **headers: str) -> httpx.Response:
        h = {"Content-Type": "application/json", **headers}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        return httpx.post(self.url + "/v1/results", content=body, headers=h, timeout=30)

    def get(self, path: str, token: str | None = TOKEN, **params) -> httpx.Response:
        h = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.get(self.url + path, params=params, headers=h, timeout=30)


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL cluster; FAILS (never skips) when it cannot start."""
    try:
        out = subprocess.run(["bash", str(ROOT / "scripts/postgres.sh"), "start"], capture_output=True,
                             text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("scripts/postgres.sh start timed out")
    if out.returncode != 0:
        pytest.fail(f"PostgreSQL could not start (scripts/postgres.sh): {out.stderr.strip()}")
    url, directory = out.stdout.strip().splitlines()[:2]
    yield url
    subprocess.run(["bash", str(ROOT / "scripts/postgres.sh"), "stop", directory], timeout=60)


def new_postgres_db(server_url: str) -> str:
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'collector.db'}"
    return new_postgres_db(request.getfixturevalue("postgres_server"))


@pytest.fixture
def collector(db_url, tmp_path):
    c = Collector(db_url, tmp_path / "collector.log").start()
    yield c
    c.stop()
