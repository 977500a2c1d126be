"""The SSH gateway and the SSH certificate authority.

Clients reach a workspace with any SSH client, on the gateway's port (`dockyard server --ssh-listen`) or through
`dockyard ssh --stdio` as a ProxyCommand (the WebSocket `/api/v2/workspaces/{workspace}/ssh`). Nothing listens
inside a workspace: every session ends in a stream to the workspace's agent.

The SSH user name selects the workspace:

| user name | workspace |
|---|---|
| `dev` | your workspace named `dev` |
| `alice.dev` | workspace `dev` of user `alice` (only where you may connect to it, e.g. as an owner) |
| `alice/dev` | the same, written as the API and the CLI write it |
| a workspace id | that workspace, if you may connect to it |

User and workspace names are made of `a-z`, `0-9` and `-` only, so neither `.` nor `/` collides with a name.
`owner.workspace` is the documented form: it also fits where a `/` does not (ssh_config host patterns, file
names). A workspace that does not exist and one you may not reach get the same answer.
Over the WebSocket transport the workspace in the URL is the target and the SSH user name is not consulted.

A client authenticates with a public key registered at `/api/v2/users/{user}/sshkeys`, or with a short-lived
user certificate from `/api/v2/users/{user}/sshcert` (principal: the Dockyard user name; key id:
`dockyard:<user>:<token id>`, so revoking the token that fetched it revokes the certificate too).
"""
