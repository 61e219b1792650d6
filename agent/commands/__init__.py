"""CLI commands. Each module holds the Typer signature and delegates the work
to the pipeline modules; heavy imports happen inside the functions."""
