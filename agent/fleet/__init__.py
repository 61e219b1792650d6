"""The fleet report: what every node measured, side by side.

- ``data``      — the report's numbers: one pass over the results (newest per configuration)
- ``scenarios`` — MLPerf LoadGen scenario tables (VALID ranked, INVALID listed with reasons)
- ``plots``     — inline SVG figures from the per-GPU summary
- ``render``    — HTML (self-contained), Markdown and CSV outputs
- ``source``    — open a collector database, or mirror a running collector
"""
