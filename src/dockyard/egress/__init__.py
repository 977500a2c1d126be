"""The egress proxy that enforces `network.egress: allowlist` and logs every connection (docs/SECURITY.md,
"Egress allow-lists")."""
