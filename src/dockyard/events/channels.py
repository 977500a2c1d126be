"""The channels Dockyard publishes on, and what their payloads are (ids only)."""

# A workspace, its latest build or its agent changed; payload: the workspace id.
WORKSPACE = "dockyard_workspace"
# Lines were appended to a build's log; payload: the build id.
BUILD_LOG = "dockyard_build_log"
# A build was queued (or requeued); payload: the build id. Wakes idle provisioner workers in every process.
JOBS = "dockyard_jobs"
# A token was revoked (`token:<id>`) or a user changed (`user:<id>`): cached authentications must go.
TOKENS = "dockyard_tokens"
# A template changed; payload: the organization id. Cached template lists must go.
TEMPLATES = "dockyard_templates"
