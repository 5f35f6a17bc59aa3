#!/usr/bin/env bash
# docker-compose.cluster.yml, postgres-standby: at the first start, a base backup of the
# primary (pg_basebackup -R writes the standby's connection to it, with application_name
# postgres_standby, which the primary's synchronous_standby_names names); then PostgreSQL as
# a hot standby streaming from it. Runs as root like the image's own entrypoint, and drops to
# the postgres user for PostgreSQL itself.
set -euo pipefail
PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGPASSWORD=$POSTGRES_PASSWORD
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_isready -q -h "$PRIMARY_HOST" -U "$POSTGRES_USER"; do sleep 1; done
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
  gosu postgres env PGPASSWORD="$POSTGRES_PASSWORD" pg_basebackup -D "$PGDATA" -X stream -c fast -R \
    -d "host=$PRIMARY_HOST port=5432 user=$POSTGRES_USER application_name=postgres_standby"
fi
# A promoted standby has no standby.signal: then it runs as a primary (manual failover).
exec gosu postgres postgres -D "$PGDATA" -c hot_standby=on
