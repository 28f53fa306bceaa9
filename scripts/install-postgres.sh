#!/bin/sh
# Makes sure PostgreSQL server binaries are available for the tests
# (internal/pgserver looks for initdb, postgres and pg_ctl on PATH, via
# pg_config --bindir, and in /usr/lib/postgresql/*/bin). Installs the
# distribution package with apt-get when running as root; otherwise explains
# how to install and exits 1.
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

if have_postgres; then
	exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "install-postgres: installing PostgreSQL with apt-get" >&2
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
	if have_postgres; then
		exit 0
	fi
	echo "install-postgres: apt-get finished but initdb is still missing" >&2
	exit 1
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
