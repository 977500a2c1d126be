#!/bin/sh
# code-server with the Node.js it was installed for (no node on PATH in the workspace image).
exec /opt/node/bin/node /opt/code-server/node_modules/code-server/out/node/entry.js "$@"
