"""The slice of Triton's HTTP/REST API (KServe v2 + Triton extensions) the agent
uses to manage a server: health, metadata, repository index, explicit
load/unload and per-model statistics. Every failure is an AgentError."""

from __future__ import annotations

import json
from typing import Any

import httpx

from agent.errors import AgentError


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    return url


class TritonAPI:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = normalize_url(url)
        self._client = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TritonAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ raw
    def _request(self, method: str, path: str, timeout: float | None = None, **kw: Any) -> httpx.Response:
        try:
            if timeout is not None:
                kw["timeout"] = timeout
            return self._client.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise AgentError(f"Triton server at {self.url} is not reachable: {e}") from e

    @staticmethod
    def _error(r: httpx.Response) -> str:
        try:
            return str(r.json().get("error") or r.text)
        except ValueError:
            return r.text.strip() or f"HTTP {r.status_code}"

    # --------------------------------------------------------------- health
    def live(self) -> bool:
        try:
            return self._client.get("/v2/health/live", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def ready(self) -> bool:
        try:
            return self._client.get("/v2/health/ready", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def metadata(self) -> dict[str, Any]:
        r = self._request("GET", "/v2")
        if r.status_code != 200:
            raise AgentError(f"Triton at {self.url}: server metadata: {self._error(r)}")
        return r.json()

    # ----------------------------------------------------------- repository
    def index(self) -> list[dict[str, Any]]:
        """Every model in the repository with its state (READY, UNAVAILABLE...) and reason."""
        r = self._request("POST", "/v2/repository/index", json={})
        if r.status_code != 200:
            raise AgentError(f"Triton at {self.url}: repository index: {self._error(r)}")
        return r.json()

    def load(self, name: str, timeout: float = 300.0, config: dict | None = None) -> str | None:
        """Load (or reload) one model; returns None on success, else Triton's reason.
        ``config``: a model configuration (JSON form) used instead of its config.pbtxt."""
        body = {"parameters": {"config": json.dumps(config)}} if config is not None else None
        r = self._request("POST", f"/v2/repository/models/{name}/load", timeout=timeout, json=body)
        return None if r.status_code == 200 else self._error(r)

    def unload(self, name: str, timeout: float = 60.0) -> str | None:
        r = self._request("POST", f"/v2/repository/models/{name}/unload", timeout=timeout)
        return None if r.status_code == 200 else self._error(r)

    # --------------------------------------------------------------- models
    def model_ready(self, name: str) -> bool:
        r = self._request("GET", f"/v2/models/{name}/ready")
        return r.status_code == 200

    def model_config(self, name: str) -> dict[str, Any]:
        r = self._request("GET", f"/v2/models/{name}/config")
        if r.status_code != 200:
            raise AgentError(f"Triton at {self.url}: config of model {name!r}: {self._error(r)}")
        return r.json()

    def model_stats(self, name: str) -> dict[str, Any]:
        r = self._request("GET", f"/v2/models/{name}/stats")
        if r.status_code != 200:
            raise AgentError(f"Triton at {self.url}: statistics of model {name!r}: {self._error(r)}")
        return r.json()
