"""Support code for the tests and benchmarks, not shipped in the agent's wheel:
``synthetic_fleet`` (realistic result documents of a made-up fleet) and ``ports``."""
