"""Stage 2 of the pipeline on a node: turn the registry's models into verified engines.

- ``pipeline`` — ``agent build-engines``: plan (what is missing or out of date, by build
  key), long-lived worker processes, the manifest written after every engine;
- ``worker``   — the worker process: export (``agent.exporters``), then verify, per model;
- ``verify``   — an engine against eager PyTorch, at the precision's tolerance;
- ``manifest`` — the build directory's ``manifest.json``: one record per engine.

Kept free of imports here: the Triton python-backend model reads the manifest helpers
without loading the build machinery."""
