#!/bin/sh
# busway: print a .env for compose.yml with every secret fresh and random.
#   deploy/new-env.sh > .env && chmod 600 .env
# Keep it secret: it holds the database, Redis and bus signing keys of the deployment.
set -eu
secret() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
for variable in POSTGRES_PASSWORD USERS_DB_PASSWORD AUTH_DB_PASSWORD ACTIVITY_DB_PASSWORD \
    REDIS_USERS_PASSWORD REDIS_AUTH_PASSWORD REDIS_ACTIVITY_PASSWORD REDIS_MAILER_PASSWORD \
    REDIS_GATEWAY_PASSWORD REDIS_ADMIN_PASSWORD \
    BUS_KEY_USERS BUS_KEY_AUTH BUS_KEY_ACTIVITY BUS_KEY_MAILER BUS_KEY_GATEWAY; do
    echo "$variable=$(secret)"
done
