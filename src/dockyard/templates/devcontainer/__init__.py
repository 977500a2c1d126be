"""Reading devcontainer.json (containers.dev) as the reference CLI does: discovery, JSONC, legacy properties,
variables, and a typed model of the result.

Pure: nothing here imports the server, a database or Docker, so the CLI can import it (lazily) as it imports
`sdk/manifest.py`.
"""

from dockyard.templates.devcontainer.discovery import ConfigLocation
from dockyard.templates.devcontainer.model import DevContainer
from dockyard.templates.devcontainer.reader import ReadResult, read_configuration, resolve

__all__ = ["ConfigLocation", "DevContainer", "ReadResult", "read_configuration", "resolve"]
