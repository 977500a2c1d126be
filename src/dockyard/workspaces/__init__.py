"""The workspace domain: the service that creates, finds and changes workspaces (`service`), how a status is
derived from the latest build (`status`) and the queries that list them for an actor (`queries`). Builds, their
jobs and the workers that run them stay in `dockyard.provisioner`."""
