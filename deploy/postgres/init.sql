-- busway: one database and one role per service (run once by the postgres image, as the
-- superuser, on an empty data directory: /docker-entrypoint-initdb.d/).
--
-- The passwords below are well-known development defaults, and the services refuse them
-- when BUSWAY_ENV=production. compose.yml runs passwords.sh next, which sets each role's
-- password from USERS_DB_PASSWORD / AUTH_DB_PASSWORD / ACTIVITY_DB_PASSWORD; elsewhere,
-- ALTER ROLE users PASSWORD '...' yourself.

-- Plain login roles: no superuser, no creating databases or roles.
CREATE ROLE users LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD 'users-dev-password';
CREATE ROLE auth LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD 'auth-dev-password';
CREATE ROLE activity LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD 'activity-dev-password';

CREATE DATABASE users OWNER users;
CREATE DATABASE auth OWNER auth;
CREATE DATABASE activity OWNER activity;

-- Least privilege: by default every role may connect to every database. Take that away,
-- then give each database back to its own role only, so neither service can reach the
-- other's data.
REVOKE CONNECT ON DATABASE users FROM PUBLIC;
REVOKE CONNECT ON DATABASE auth FROM PUBLIC;
REVOKE CONNECT ON DATABASE activity FROM PUBLIC;
GRANT CONNECT ON DATABASE users TO users;
GRANT CONNECT ON DATABASE auth TO auth;
GRANT CONNECT ON DATABASE activity TO activity;
