"""Spool result documents on disk and push them to the collector.

Every ``agent bench`` result is first written to the spool (one JSON file per
document, ``<id>.json`` in ``config.spool_dir``, written atomically). A push
sends each spooled document and deletes it only after the collector
acknowledged it (2xx, or 409 for an id it already holds). Unreachable
collector, timeouts, 502/503/504 and a collector whose ``/healthz`` fails are
an outage: the documents stay in the spool and are retried with exponential
backoff and jitter within ``retry_for`` seconds, and on the next push.

One document must never block the others. A permanent rejection — a 4xx, or
a 5xx that repeats ``SERVER_ERROR_STRIKES`` times for the same document while
the collector reports itself healthy — moves that document to the
dead-letter folder (``<spool>/dead-letter/<id>.json`` beside
``<id>.reason``), reports it once, and the push goes on with the next one.
``agent report push --requeue-dead-letter`` puts them back in the spool.
The collector ingests idempotently by id, so a document whose
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

from agent.collector import HEALTH_PATH, RESULTS_PATH
from agent.config import AgentConfig
from agent.errors import AgentError
from agent.fsutil import TMP_PREFIX, atomic_write_text
from agent.schema import ResultDocument

DEAD_LETTER_DIR = "dead-letter"
LOCK_NAME = ".push.lock"
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
SERVER_ERROR_STRIKES = 3  # 5xx in a row for one document, collector healthy -> dead letter
OUTAGE_STATUSES = (408, 425, 429, 502, 503, 504)  # the collector (or its proxy) is busy or down


@dataclass
class PushSummary:
    sent: int = 0
    duplicates: int = 0
    rejected: list[str] = field(default_factory=list)  # "<file>: <reason>" of documents dead-lettered now
    remaining: int = 0
    last_error: str | None = None


def collector_base(url: str | None) -> str:
    """The collector's base URL, checked (http/https, a host), without a trailing slash."""
    from urllib.parse import urlsplit

    base = (url or "").strip().rstrip("/")
    if not base:
        raise AgentError("no collector URL: pass --collector URL or set collector_url "
                         "(INFERFLEET_COLLECTOR_URL) in the agent config")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AgentError(f"collector URL must be http://HOST[:PORT] or https://..., got {base!r}")
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise AgentError(f"collector URL has an invalid port: {base!r}") from None
    return base


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


def _healthy(client, base: str) -> bool:  # noqa: ANN001
    import httpx

    try:
        return client.get(base + HEALTH_PATH).status_code == 200
    except httpx.HTTPError:
        return False


def dead_letter(path: Path, reason: str) -> Path:
    """Move a spooled document aside with the reason (one line) beside it; never lose it."""
    folder = path.parent / DEAD_LETTER_DIR
    folder.mkdir(exist_ok=True)
    atomic_write_text(folder / (path.stem + ".reason"), f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} "
                      f"{' '.join(reason.split())}\n")
    os.replace(path, folder / path.name)
    return folder / path.name


def requeue_dead_letters(spool: Path) -> int:
    """Move every dead-lettered document back into the spool; returns how many."""
    folder = spool / DEAD_LETTER_DIR
    moved = 0
    for doc in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        os.replace(doc, spool / doc.name)
        (folder / (doc.stem + ".reason")).unlink(missing_ok=True)
        moved += 1
    return moved


def _send_one(client, base: str, path: Path, summary: PushSummary) -> None:  # noqa: ANN001
    import httpx

    try:
        body = path.read_bytes()
    except FileNotFoundError:
        return  # another pusher (an older agent without the lock) took it
    url = base + RESULTS_PATH
    for strike in range(1, SERVER_ERROR_STRIKES + 1):
        try:
            resp = client.post(url, content=body, headers={"Content-Type": "application/json"})
        except httpx.HTTPError as e:
            raise _Transient(f"collector {url} unreachable ({_describe(e)})") from None
        code = resp.status_code
        if code == 409 or code == 200 and _status(resp) == "duplicate":
            summary.duplicates += 1
            path.unlink(missing_ok=True)
            return
        if 200 <= code < 300:
            summary.sent += 1
            path.unlink(missing_ok=True)
            return
        if code in (401, 403):
            raise AgentError(f"collector {url} refused the token ({code} {_detail(resp)}): "
                             f"documents stay in the spool")
        if code in OUTAGE_STATUSES:
            raise _Transient(f"collector {url} answered {code} {_detail(resp)}")
        if code < 500:  # 400/413/415/422: this document will never be accepted
            break
        # 500 and friends: an outage, or this document breaks the collector?
        if not _healthy(client, base):
            raise _Transient(f"collector {url} answered {code} {_detail(resp)} and is not healthy")
        if strike < SERVER_ERROR_STRIKES:
            time.sleep(0.2 * 2 ** strike)
    reason = f"{code} {_detail(resp)}"
    if code >= 500:
        reason += f" ({SERVER_ERROR_STRIKES} times in a row while the collector was healthy)"
    dead_letter(path, reason)
    summary.rejected.append(f"{path.name}: {reason}")


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
    """Send every spooled document; raise AgentError when some remain or were dead-lettered."""
    import httpx

    from agent.ui import console_err

    base = collector_base(collector_url or config.collector_url)
    env = token_env or config.collector_token_env
    token = os.environ.get(env, "").strip()
    if not token:
        raise AgentError(f"no collector token: the environment variable {env} is not set")
    if retry_for < 0:
        raise AgentError("--retry-for must be >= 0 seconds")
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
                    _send_one(client, base, path, summary)
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
    for line in summary.rejected:
        console_err.print(f"push: dead-lettered {line}", highlight=False)
    if summary.remaining:
        raise AgentError(f"{summary.remaining} result document(s) remain in the spool {spool}: "
                         f"{summary.last_error or 'not acknowledged'}; they are sent on the next push")
    if summary.rejected:
        raise AgentError(f"the collector rejected {len(summary.rejected)} document(s), moved to "
                         f"{spool / DEAD_LETTER_DIR} (the others were delivered): {summary.rejected[0]}",
                         code=3)
    return summary
