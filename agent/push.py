"""Spool result documents on disk and push them to the collector.

Every ``agent bench`` result is first written to the spool (one JSON file per
document, ``<id>.json`` in ``config.spool_dir``, written atomically). A push
sends each spooled document and deletes it only after the collector
acknowledged it (2xx, or 409 for an id it already holds). Unreachable
collector, timeouts and 5xx leave the document in the spool and are retried
with exponential backoff and jitter within ``retry_for`` seconds, and on the
next push. The collector ingests idempotently by id, so a document whose
acknowledgement was lost and is sent again is stored once.

A lock file (``.push.lock``, ``flock``) keeps two pushers on one node from
sending the same documents at the same time. The token is read from an
environment variable and never printed."""

from __future__ import annotations

import fcntl
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from agent.config import AgentConfig
from agent.errors import AgentError
from agent.fsutil import TMP_PREFIX, atomic_write_text
from agent.schema import ResultDocument

RESULTS_PATH = "/v1/results"
REJECTED_DIR = "rejected"
LOCK_NAME = ".push.lock"
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0


@dataclass
class PushSummary:
    sent: int = 0
    duplicates: int = 0
    rejected: list[str] = field(default_factory=list)
    remaining: int = 0
    last_error: str | None = None


def spool_document(doc: ResultDocument, config: AgentConfig) -> Path:
    """Write ``doc`` to the spool (atomically); returns its path."""
    spool = config.spool_dir
    try:
        spool.mkdir(parents=True, exist_ok=True)
        path = spool / f"{doc.id}.json"
        atomic_write_text(path, doc.model_dump_json() + "\n")
    except OSError as e:
        raise AgentError(f"cannot write to the result spool {spool}: {e.strerror or e}") from e
    return path


def spooled(spool: Path) -> list[Path]:
    """Spooled documents, oldest first (temporaries of killed writers excluded)."""
    if not spool.is_dir():
        return []
    files = [p for p in spool.glob("*.json") if p.is_file() and not p.name.startswith(TMP_PREFIX)]
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))


@contextmanager
def spool_lock(spool: Path, wait_s: float) -> Iterator[None]:
    spool.mkdir(parents=True, exist_ok=True)
    fd = os.open(spool / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise AgentError(f"another push holds {spool / LOCK_NAME}: try again when it is done") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # releases the lock


def backoff_delay(attempt: int, rng: random.Random = random.Random()) -> float:  # noqa: B008
    """Full-jitter exponential backoff: uniform(0, min(cap, base * 2**attempt))."""
    return rng.uniform(0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** attempt)) + 0.05


class _Transient(Exception):
    pass


def _describe(e: Exception) -> str:
    return f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")


def _send_one(client, url: str, path: Path, summary: PushSummary) -> None:  # noqa: ANN001
    import httpx

    try:
        body = path.read_bytes()
    except FileNotFoundError:
        return  # another pusher (an older agent without the lock) took it
    try:
        resp = client.post(url, content=body, headers={"Content-Type": "application/json"})
    except httpx.HTTPError as e:
        raise _Transient(f"collector {url} unreachable ({_describe(e)})") from None
    if resp.status_code == 409 or resp.status_code == 200 and _status(resp) == "duplicate":
        summary.duplicates += 1
        path.unlink(missing_ok=True)
    elif 200 <= resp.status_code < 300:
        summary.sent += 1
        path.unlink(missing_ok=True)
    elif resp.status_code in (401, 403):
        raise AgentError(f"collector {url} refused the token ({resp.status_code} {_detail(resp)}): "
                         f"{len(summary.rejected)} rejected, documents stay in the spool")
    elif resp.status_code in (408, 425, 429) or resp.status_code >= 500:
        raise _Transient(f"collector {url} answered {resp.status_code} {_detail(resp)}")
    else:  # 400/413/422: this document will never be accepted; keep it aside, never lose it
        rejected = path.parent / REJECTED_DIR
        rejected.mkdir(exist_ok=True)
        os.replace(path, rejected / path.name)
        summary.rejected.append(f"{path.name}: {resp.status_code} {_detail(resp)}")


def _status(resp) -> str | None:  # noqa: ANN001
    try:
        return resp.json().get("status")
    except ValueError:
        return None


def _detail(resp) -> str:  # noqa: ANN001
    try:
        return str(resp.json().get("detail", ""))[:200]
    except (ValueError, AttributeError):
        return resp.reason_phrase


def push_spool(config: AgentConfig, collector_url: str | None = None, token_env: str | None = None,
               retry_for: float = 0.0, timeout: float = 10.0) -> PushSummary:
    """Send every spooled document; raise AgentError when some remain or were rejected."""
    import httpx

    from agent.ui import console_err

    base = (collector_url or config.collector_url or "").rstrip("/")
    if not base:
        raise AgentError("no collector URL: pass --collector URL or set collector_url "
                         "(INFERFLEET_COLLECTOR_URL) in the agent config")
    if not base.startswith(("http://", "https://")):
        raise AgentError(f"collector URL must start with http:// or https://, got {base!r}")
    env = token_env or config.collector_token_env
    token = os.environ.get(env, "").strip()
    if not token:
        raise AgentError(f"no collector token: the environment variable {env} is not set")
    if retry_for < 0:
        raise AgentError("--retry-for must be >= 0 seconds")
    url = base + RESULTS_PATH
    spool = config.spool_dir
    summary = PushSummary()
    deadline = time.monotonic() + retry_for
    with spool_lock(spool, wait_s=max(retry_for, timeout) + 30), httpx.Client(
        timeout=timeout, headers={"Authorization": f"Bearer {token}"}, follow_redirects=False,
    ) as client:
        attempt = 0
        while True:
            pending = spooled(spool)
            try:
                for path in pending:
                    _send_one(client, url, path, summary)
                summary.last_error = None
                break
            except _Transient as e:
                summary.last_error = str(e)
            delay = backoff_delay(attempt)
            attempt += 1
            if time.monotonic() + delay > deadline:
                break
            console_err.print(f"push: {summary.last_error}; retrying in {delay:.1f}s", highlight=False)
            time.sleep(delay)
        summary.remaining = len(spooled(spool))
    if summary.sent or summary.duplicates:
        console_err.print(f"push: {summary.sent} sent, {summary.duplicates} already stored, "
                          f"to {base}", highlight=False)
    if summary.remaining:
        raise AgentError(f"{summary.remaining} result document(s) remain in the spool {spool}: "
                         f"{summary.last_error or 'not acknowledged'}; they are sent on the next push")
    if summary.rejected:
        raise AgentError(f"the collector rejected {len(summary.rejected)} document(s), moved to "
                         f"{spool / REJECTED_DIR}: {summary.rejected[0]}")
    return summary
