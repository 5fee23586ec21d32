#!/bin/sh
# Least-privilege users for one service's database. docker-compose.yml mounts
# this into the mariadb image's /docker-entrypoint-initdb.d, which runs it
# once, on the database's first start:
#
#   MIGRATE_USER / MIGRATE_PASSWORD  may change the schema of $MARIADB_DATABASE;
#                                    the service uses it only to apply migrations at start-up
#   APP_USER / APP_PASSWORD          may only read and write rows of $MARIADB_DATABASE
#
# Neither gets any right on another database or any global privilege, so the
# order service's users cannot touch the voucher database and the other way
# round even if both databases shared a server. Runs elsewhere too: set
# MARIADB_CLIENT to a client command line that connects as an administrator.
set -eu
: "${MARIADB_DATABASE:?set MARIADB_DATABASE}" "${APP_USER:?set APP_USER}" "${APP_PASSWORD:?set APP_PASSWORD}"
: "${MIGRATE_USER:?set MIGRATE_USER}" "${MIGRATE_PASSWORD:?set MIGRATE_PASSWORD}"

# Values go into SQL string literals and identifiers: double the quotes they could close.
lit() { printf '%s' "$1" | sed "s/'/''/g"; }
ident() { printf '%s' "$1" | sed 's/`/``/g'; }

if [ -n "${MARIADB_CLIENT:-}" ]; then
  admin() { $MARIADB_CLIENT; }
elif [ -n "${MARIADB_ROOT_PASSWORD:-}" ]; then
  admin() { mariadb -uroot -p"$MARIADB_ROOT_PASSWORD"; }
else
  admin() { mariadb -uroot; }
fi

db=$(ident "$MARIADB_DATABASE")
admin <<SQL
CREATE USER IF NOT EXISTS '$(lit "$MIGRATE_USER")'@'%' IDENTIFIED BY '$(lit "$MIGRATE_PASSWORD")';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, DROP, REFERENCES ON \`$db\`.* TO '$(lit "$MIGRATE_USER")'@'%';
CREATE USER IF NOT EXISTS '$(lit "$APP_USER")'@'%' IDENTIFIED BY '$(lit "$APP_PASSWORD")';
GRANT SELECT, INSERT, UPDATE, DELETE ON \`$db\`.* TO '$(lit "$APP_USER")'@'%';
SQL
echo "least-privilege.sh: users $MIGRATE_USER (schema changes) and $APP_USER (rows only) on database $MARIADB_DATABASE"
