"""The REST API (FastAPI): routers per resource, auth dependencies, the error model and metrics."""

from dockyard.api.descriptions import describe_wire_models

# Before any route module declares a model: FastAPI reads the descriptions when a route is declared.
describe_wire_models()
