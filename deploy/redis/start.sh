#!/bin/sh
# busway's Redis: fill the generated ACL template (users.acl.template, from `python -m
# bus.acl`) with the passwords in REDIS_<SERVICE>_PASSWORD and REDIS_ADMIN_PASSWORD, then
# start Redis through the image's own entrypoint (which drops to the redis user).
# Passwords: letters and digits (deploy/new-env.sh makes such).
set -eu
umask 077
acl=/data/users.acl
cp /etc/busway/users.acl.template "$acl"
for name in USERS AUTH ACTIVITY MAILER GATEWAY ADMIN; do
    eval "password=\${REDIS_${name}_PASSWORD:-}"
    if [ -z "$password" ]; then
        echo "busway: REDIS_${name}_PASSWORD is not set" >&2
        exit 1
    fi
    case "$password" in
        *[!A-Za-z0-9]*) echo "busway: REDIS_${name}_PASSWORD must be letters and digits" >&2; exit 1 ;;
    esac
    sed -i "s/@${name}_PASSWORD@/${password}/" "$acl"
done
exec docker-entrypoint.sh redis-server --appendonly yes --aclfile "$acl"
