"""Command-line interface (typer): thin commands over the Python API."""
