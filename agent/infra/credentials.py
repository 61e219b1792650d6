"""Cloud credentials: only from the environment, checked before Terraform runs,
never logged."""

from __future__ import annotations

import os

from agent.errors import AgentError


def check_credentials(cloud: str, env: dict[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    if cloud == "genesiscloud":
        if not env.get("GENESISCLOUD_TOKEN", "").strip():
            raise AgentError(
                "GENESISCLOUD_TOKEN is not set: export your Genesis Cloud API token "
                "(console > API keys) before provisioning"
            )
    elif cloud == "aws":
        has_keys = env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY")
        other = ("AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        if not has_keys and not any(env.get(v) for v in other):
            raise AgentError(
                "no AWS credentials in the environment: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            )
    else:
        raise AgentError(f"unknown cloud {cloud!r}")
