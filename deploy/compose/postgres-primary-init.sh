#!/usr/bin/env bash
# docker-compose.cluster.yml, postgres-primary, first initialisation only
# (/docker-entrypoint-initdb.d): let the standby replicate, and confirm every commit only once
# the standby has it. The name is the application_name of postgres-standby's connection
# (deploy/compose/postgres-standby.sh). ALTER SYSTEM takes effect at the server's next start,
# the real one, so this initialisation itself waits for no standby.
set -euo pipefail
echo "host replication all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -c "ALTER SYSTEM SET synchronous_standby_names = 'postgres_standby'"
