#!/bin/sh
# PostgreSQL (Debian's postgresql-15) for the gateways' queue and index: on the first start,
# initdb into $PGDATA (the volume) with the password of POSTGRES_PASSWORD_FILE (a compose or
# Kubernetes secret) for the user POSTGRES_USER and a database POSTGRES_DB; then run the server
# in the foreground, listening on every interface with scram-sha-256 passwords.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=fedgate}"
: "${POSTGRES_DB:=fedgate}"
bin=/usr/lib/postgresql/15/bin
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD_FILE:-}" ] || [ ! -r "$POSTGRES_PASSWORD_FILE" ]; then
    echo "postgres-entrypoint: POSTGRES_PASSWORD_FILE must name a readable file" >&2
    exit 1
  fi
  "$bin/initdb" --pgdata="$PGDATA" --username="$POSTGRES_USER" --pwfile="$POSTGRES_PASSWORD_FILE" \
    --auth-local=scram-sha-256 --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8
  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
  echo "host all all ::/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
  "$bin/postgres" --single -D "$PGDATA" postgres <<SQL
CREATE DATABASE "$POSTGRES_DB" OWNER "$POSTGRES_USER";
SQL
fi
# The socket directory is the data volume's sibling on tmpfs (/tmp): the root stays read-only.
exec "$bin/postgres" -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp
