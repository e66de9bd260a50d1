#!/bin/sh
# Runs once, when the postgres image initialises its data directory: creates chatledger's schema
# owner as an ordinary role (not a superuser) with the runtime role it grants itself, and the
# database it owns. The image's own superuser (POSTGRES_USER) is used for nothing else.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
     -v password="$CHATLEDGER_OWNER_PASSWORD" <<'SQL'
CREATE ROLE chatledger_owner LOGIN NOSUPERUSER NOCREATEROLE NOBYPASSRLS PASSWORD :'password';
CREATE ROLE chatledger_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
GRANT chatledger_app TO chatledger_owner;
CREATE DATABASE chatledger OWNER chatledger_owner TEMPLATE template0
    ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C.UTF-8';
SQL
