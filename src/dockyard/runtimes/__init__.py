"""Where workspaces run: the `Runtime` interface and its implementations (Docker today)."""
