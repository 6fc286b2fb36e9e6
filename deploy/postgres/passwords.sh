#!/bin/sh
# busway: give each service's role the password from the environment. The postgres image
# runs /docker-entrypoint-initdb.d/ in name order, so this follows init.sql (which creates
# the roles with development passwords) on an empty data directory. compose.yml passes
# USERS_DB_PASSWORD, AUTH_DB_PASSWORD and ACTIVITY_DB_PASSWORD in.
set -eu
for service in users auth activity; do
    variable="$(echo "$service" | tr '[:lower:]' '[:upper:]')_DB_PASSWORD"
    eval "password=\${$variable:-}"
    if [ -z "$password" ]; then
        echo "busway: $variable is not set" >&2
        exit 1
    fi
    psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
        -v role="$service" -v password="$password" <<'SQL'
ALTER ROLE :"role" PASSWORD :'password';
SQL
done
