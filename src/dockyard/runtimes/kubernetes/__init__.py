"""The Kubernetes runtime: workspaces as pods, homes as PersistentVolumeClaims, one NetworkPolicy each.

`manifests.py` and `states.py` are pure (spec in, object dicts out; pod dict in, observation out) so that they can
be tested without a cluster and reused when the runtime interface takes a resolved plan; `runtime.py` holds the
client calls.
"""
