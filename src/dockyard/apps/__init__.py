"""Workspace apps and ports in the browser: an HTTP/WebSocket reverse proxy through the agent tunnel (docs/WEB.md)."""
