-- busway: one database and one role per service (run once by the postgres image, as the
-- superuser, on an empty data directory: /docker-entrypoint-initdb.d/).
--
-- DEVELOPMENT ONLY: the passwords below are well-known defaults for local use. In any
-- shared or production deployment change them (ALTER ROLE users PASSWORD '...'), and set
-- USERS_DB_PASSWORD / AUTH_DB_PASSWORD / ACTIVITY_DB_PASSWORD for compose.yml to match.

CREATE ROLE users LOGIN PASSWORD 'users-dev-password';
CREATE ROLE auth LOGIN PASSWORD 'auth-dev-password';
CREATE ROLE activity LOGIN PASSWORD 'activity-dev-password';

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
