"""The fleet report: what every node measured, side by side.

- ``data``      — the report's numbers, queried with SQL aggregation
- ``plots``     — matplotlib (Agg) figures embedded as PNG data URIs
- ``render``    — HTML (self-contained), Markdown and CSV outputs
- ``source``    — open a collector database, or mirror a running collector
- ``synthetic`` — realistic result documents for tests and benchmarks
"""
