"""Outgoing webhooks: task and workspace status changes posted, signed, to users' endpoints (docs/AGENTS.md)."""
