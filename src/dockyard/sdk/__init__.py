"""The Dockyard SDK: an httpx client and the wire models it shares with the server and the CLI."""

from dockyard.sdk.client import Client, pack_template
from dockyard.sdk.errors import ApiError, ConnectionFailed

__all__ = ["ApiError", "Client", "ConnectionFailed", "pack_template"]
