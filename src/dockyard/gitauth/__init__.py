"""Git credentials held by the control plane and released on demand, through a workspace's agent, to the git
of that workspace alone (docs/AGENTS.md, docs/SECURITY.md "Git credentials")."""
