"""Builds and their jobs: creating workspaces and builds, the job queue, and the workers that run them."""
