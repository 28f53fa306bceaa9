#!/bin/sh
# Makes sure PostgreSQL server binaries and PgBouncer are available for the
# tests (internal/pgserver looks for initdb, postgres and pg_ctl on PATH, via
# pg_config --bindir, and in /usr/lib/postgresql/*/bin; internal/pgbouncer
# looks for pgbouncer on PATH and in /usr/sbin). Installs the missing
# distribution packages with apt-get when running as root; otherwise explains
# how to install them, and exits 1 if PostgreSQL is missing (a missing
# pgbouncer only makes its tests skip outside CI, so it is just reported).
set -eu

have_postgres() {
	if command -v initdb >/dev/null 2>&1; then
		return 0
	fi
	for f in /usr/lib/postgresql/*/bin/initdb; do
		[ -x "$f" ] && return 0
	done
	return 1
}

have_pgbouncer() {
	command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]
}

missing=""
have_postgres || missing="postgresql"
have_pgbouncer || missing="$missing pgbouncer"
if [ -z "$missing" ]; then
	exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "install-postgres: installing$missing with apt-get" >&2
	apt-get update
	# shellcheck disable=SC2086 # $missing is a list of package names
	DEBIAN_FRONTEND=noninteractive apt-get install -y $missing
	ok=1
	if ! have_postgres; then
		echo "install-postgres: apt-get finished but initdb is still missing" >&2
		ok=0
	fi
	if ! have_pgbouncer; then
		echo "install-postgres: apt-get finished but pgbouncer is still missing" >&2
		ok=0
	fi
	[ "$ok" -eq 1 ] && exit 0
	exit 1
fi

if ! have_pgbouncer; then
	cat >&2 <<'MSG'
install-postgres: pgbouncer not found; the internal/pgbouncer tests will skip
(and fail when CI is set). Install it, e.g.:
  Debian/Ubuntu:  sudo apt-get install pgbouncer
  Fedora/RHEL:    sudo dnf install pgbouncer
  macOS:          brew install pgbouncer
MSG
fi
if have_postgres; then
	exit 0
fi
cat >&2 <<'MSG'
install-postgres: PostgreSQL server binaries (initdb, postgres, pg_ctl) not found.
Install them, e.g.:
  Debian/Ubuntu:  sudo apt-get install postgresql
  Fedora/RHEL:    sudo dnf install postgresql-server
  macOS:          brew install postgresql
or point the tests at an existing server (as a superuser):
  export ALOCK_TEST_DSN='host=localhost user=postgres dbname=postgres'
MSG
exit 1
