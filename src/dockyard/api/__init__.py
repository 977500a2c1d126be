"""The REST API (FastAPI): routers per resource, auth dependencies, the error model and metrics."""
