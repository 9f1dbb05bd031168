"""The HTTP API: a thin FastAPI layer over the same functions the CLI calls."""
