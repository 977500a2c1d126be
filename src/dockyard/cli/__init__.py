"""The `dockyard` command line. Client commands use only `dockyard.sdk`; `server` and `db` run the server."""
