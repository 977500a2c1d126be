"""Background loops: reconciliation with the runtime, TTL deadlines, and the provisioner workers' host."""
