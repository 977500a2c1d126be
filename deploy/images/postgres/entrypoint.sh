#!/bin/sh
# First start on an empty volume: a cluster whose one role and database are POSTGRES_USER/POSTGRES_DB with
# POSTGRES_PASSWORD (from the manifests' Secret), password logins over the network only, with
# POSTGRES_INITDB_ARGS added to initdb's. Then PostgreSQL itself, with the container's arguments (-c name=value).
set -eu
: "${POSTGRES_USER:=dockyard}" "${POSTGRES_DB:=dockyard}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    [ -n "${POSTGRES_PASSWORD:-}" ] || { echo "error: POSTGRES_PASSWORD is empty" >&2; exit 1; }
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --username "$POSTGRES_USER" --pwfile "$pwfile" --auth-local peer --auth-host scram-sha-256 \
        --encoding UTF8 --locale C.UTF-8 ${POSTGRES_INITDB_ARGS:-} "$PGDATA" >/dev/null
    rm -f "$pwfile"
    echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
    echo "host all all ::/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\";" | postgres --single -j -D "$PGDATA" postgres >/dev/null
    fi
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp "$@"
