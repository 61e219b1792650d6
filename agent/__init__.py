"""inferfleet node agent: model registry -> exporters -> verification -> Triton
repository -> server -> load generation -> report."""

__version__ = "0.1.0"
