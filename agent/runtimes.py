"""Renamed :mod:`agent.runners` (a "runtime" is now how Triton runs: process or container).
Kept one release for the python-backend ``model.py`` files that older agents copied into
Triton repositories (they import this name until ``agent repo`` rewrites them)."""

from agent.runners import *  # noqa: F401,F403
from agent.runners import load_runner  # noqa: F401
