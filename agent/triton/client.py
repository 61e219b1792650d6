"""The one way the agent talks to Triton: ``tritonclient`` (HTTP or gRPC).

* :func:`connect`, :func:`call` and :func:`protocol_module` — a client per thread
  for inference (the served benchmark, LoadGen, ``agent classify``), every failure an
  :class:`AgentError` naming what was asked;
* the JSON views both protocols answer alike (:func:`server_metadata`,
  :func:`model_config`, :func:`repository_index`, :func:`inference_statistics`);
* :class:`TritonAPI` — server control over HTTP (health, metadata, repository index,
  explicit load/unload with an optional config, readiness, statistics) for
  ``agent serve`` and ``agent tune``."""

from __future__ import annotations

import json
from typing import Any

from agent.errors import AgentError

CONTROL_TIMEOUT_S = 300.0  # loading a model (python backend stubs, big engines) can take minutes


def protocol_module(protocol: str):
    """``tritonclient.http`` or ``tritonclient.grpc``."""
    if protocol == "grpc":
        import tritonclient.grpc as mod
    elif protocol == "http":
        import tritonclient.http as mod
    else:
        raise AgentError(f"unknown protocol {protocol!r}: use http or grpc")
    return mod


def host_port(url: str) -> str:
    """``host:port`` of a URL given with or without its scheme."""
    return url.strip().split("://", 1)[-1].rstrip("/")


def connect(url: str, protocol: str = "http", timeout: float | None = None):
    """A tritonclient client for ``url`` (one per thread: the HTTP client is not shared)."""
    kw: dict[str, Any] = {}
    if timeout is not None:
        kw = ({"connection_timeout": timeout, "network_timeout": timeout} if protocol == "http" else {})
    try:
        return protocol_module(protocol).InferenceServerClient(url=host_port(url), **kw)
    except AgentError:
        raise
    except Exception as e:
        raise AgentError(f"cannot create a Triton {protocol} client for {url}: {e}") from e


def error_text(e: BaseException) -> str:
    from tritonclient.utils import InferenceServerException

    if isinstance(e, InferenceServerException):
        return " ".join(str(e.message() or e).split())
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"  # connection refused, timeouts


def call(what: str, fn, *args, **kw):
    """``fn(*args, **kw)``; a tritonclient or connection error becomes an AgentError."""
    try:
        return fn(*args, **kw)
    except Exception as e:
        raise AgentError(f"Triton: {what}: {error_text(e)}") from e


def _json(client, protocol: str, what: str, fn, *args) -> Any:
    return call(what, fn, *args, as_json=True) if protocol == "grpc" else call(what, fn, *args)


def server_metadata(client, protocol: str) -> dict:
    return _json(client, protocol, "server metadata", client.get_server_metadata)


def model_config(client, protocol: str, name: str) -> dict:
    cfg = _json(client, protocol, f"config of {name}", client.get_model_config, name)
    return cfg["config"] if protocol == "grpc" else cfg


def repository_index(client, protocol: str) -> list[dict]:
    index = _json(client, protocol, "repository index", client.get_model_repository_index)
    return index.get("models", []) if protocol == "grpc" else index


def inference_statistics(client, protocol: str, name: str) -> dict:
    return _json(client, protocol, f"statistics of {name}", client.get_inference_statistics, name)


class TritonAPI:
    """Server control over HTTP (tritonclient.http). Health probes answer False when the
    server cannot be reached; load/unload return None or Triton's reason; the rest raise
    AgentError."""

    def __init__(self, url: str, timeout: float = CONTROL_TIMEOUT_S) -> None:
        self.url = "http://" + host_port(url) if "://" not in url else url.strip().rstrip("/")
        self._client = connect(url, "http", timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TritonAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _probe(self, fn, *args) -> bool:
        try:
            return bool(fn(*args))
        except Exception:
            return False

    # --------------------------------------------------------------- health
    def live(self) -> bool:
        return self._probe(self._client.is_server_live)

    def ready(self) -> bool:
        return self._probe(self._client.is_server_ready)

    def metadata(self) -> dict[str, Any]:
        return call(f"server metadata at {self.url}", self._client.get_server_metadata)

    # ----------------------------------------------------------- repository
    def index(self) -> list[dict[str, Any]]:
        """Every model in the repository with its state (READY, UNAVAILABLE...) and reason."""
        return repository_index(self._client, "http")

    def load(self, name: str, config: dict | None = None) -> str | None:
        """Load (or reload) one model; None on success, else Triton's reason.
        ``config``: a model configuration (JSON form) used instead of its config.pbtxt."""
        try:
            self._client.load_model(name, config=json.dumps(config) if config is not None else None)
        except Exception as e:
            return error_text(e)
        return None

    def unload(self, name: str) -> str | None:
        try:
            self._client.unload_model(name)
        except Exception as e:
            return error_text(e)
        return None

    # --------------------------------------------------------------- models
    def model_ready(self, name: str) -> bool:
        return self._probe(self._client.is_model_ready, name)

    def model_config(self, name: str) -> dict[str, Any]:
        return model_config(self._client, "http", name)

    def model_stats(self, name: str) -> dict[str, Any]:
        return inference_statistics(self._client, "http", name)
