"""The MCP server: Dockyard's operations as Model Context Protocol tools, for AI agents and their hosts.

`/api/v2/mcp` serves it over streamable HTTP with a bearer token; `dockyard mcp` carries it over stdio with the
CLI's credentials. The tools offered follow the token's scopes, and every call is audited.
"""
