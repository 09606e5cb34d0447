#!/usr/bin/env bash
# Entrypoint of the postgres stand-in: the official image's interface (docker-library/postgres,
# docker-entrypoint.sh), minus nss_wrapper and gosu.
#
#   POSTGRES_PASSWORD (required to initialise), POSTGRES_USER (postgres), POSTGRES_DB (= user),
#   POSTGRES_INITDB_ARGS, POSTGRES_INITDB_WALDIR, POSTGRES_HOST_AUTH_METHOD (scram-sha-256),
#   and the *_FILE variants of the first four (read from a file, e.g. a Docker secret).
#
# Started as root: fixes the ownership of PGDATA (a new volume is root's) and runs itself again
# as `postgres` through setpriv (util-linux, already in the base). On an empty PGDATA: initdb,
# `host all all all <method>` in pg_hba.conf, a temporary server on the Unix socket only that
# creates POSTGRES_DB and runs /docker-entrypoint-initdb.d/*, then stop. Finally execs the
# command (`postgres` plus the arguments given), so PostgreSQL is PID 1 and gets the signals.
set -Eeo pipefail

# file_env VAR [DEFAULT]: VAR from $VAR, or from the file named by $VAR_FILE, or DEFAULT.
file_env() {
	local var="$1" file_var="${1}_FILE" def="${2:-}" val
	if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
		printf >&2 'error: both %s and %s are set (but are exclusive)\n' "$var" "$file_var"
		exit 1
	fi
	val="$def"
	if [ -n "${!var:-}" ]; then
		val="${!var}"
	elif [ -n "${!file_var:-}" ]; then
		val="$(<"${!file_var}")"
	fi
	export "$var"="$val"
	unset "$file_var"
}

docker_setup_env() {
	file_env POSTGRES_PASSWORD
	file_env POSTGRES_USER postgres
	file_env POSTGRES_DB "$POSTGRES_USER"
	file_env POSTGRES_INITDB_ARGS
	: "${POSTGRES_HOST_AUTH_METHOD:=}"
	DATABASE_ALREADY_EXISTS=
	if [ -s "$PGDATA/PG_VERSION" ]; then
		DATABASE_ALREADY_EXISTS=true
	fi
}

docker_create_db_directories() {
	local uid
	uid="$(id -u)"
	mkdir -p "$PGDATA"
	# PostgreSQL refuses a data directory others can read (ignore failure: not our mount).
	chmod 00700 "$PGDATA" || :
	mkdir -p /var/run/postgresql || :
	chmod 03775 /var/run/postgresql || :
	if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
		mkdir -p "$POSTGRES_INITDB_WALDIR"
		if [ "$uid" = 0 ]; then
			find "$POSTGRES_INITDB_WALDIR" \! -user postgres -exec chown postgres '{}' +
		fi
		chmod 700 "$POSTGRES_INITDB_WALDIR"
	fi
	if [ "$uid" = 0 ]; then
		find "$PGDATA" \! -user postgres -exec chown postgres '{}' +
		find /var/run/postgresql \! -user postgres -exec chown postgres '{}' +
	fi
}

docker_verify_minimum_env() {
	if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
		cat >&2 <<-'EOE'
			Error: Database is uninitialized and superuser password is not specified.
			       You must specify POSTGRES_PASSWORD to a non-empty value for the
			       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".

			       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
			       connections without a password. This is *not* recommended.
		EOE
		exit 1
	fi
	if [ "$POSTGRES_HOST_AUTH_METHOD" = trust ]; then
		printf >&2 'WARNING: POSTGRES_HOST_AUTH_METHOD=trust: every host may connect without a password.\n'
	fi
}

docker_init_database_dir() {
	if ! getent passwd "$(id -u)" >/dev/null; then
		printf >&2 'error: uid %s has no passwd entry; initdb needs one (run as root or postgres)\n' \
			"$(id -u)"
		exit 1
	fi
	if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
		set -- --waldir "$POSTGRES_INITDB_WALDIR" "$@"
	fi
	# UTF8 explicitly; the locale comes from LANG (C.UTF-8 in this image). POSTGRES_INITDB_ARGS is
	# word-split on purpose (as in the official image) and, coming last, overrides the defaults.
	# The password travels through a pipe, never a file or the command line.
	eval 'initdb --username="$POSTGRES_USER" --pwfile=<(printf "%s\n" "$POSTGRES_PASSWORD") --encoding=UTF8 '"$POSTGRES_INITDB_ARGS"' "$@"'
}

# Password authentication for every host connection. initdb's own lines stay first, so the
# Unix socket and loopback are `trust`, as in the official image (the healthcheck's pg_isready
# needs no password either way).
pg_setup_hba_conf() {
	if [ "$1" = postgres ]; then
		shift
	fi
	local auth
	# The method that matches how passwords are stored (password_encryption: scram-sha-256).
	auth="$(postgres -C password_encryption "$@")"
	: "${POSTGRES_HOST_AUTH_METHOD:=$auth}"
	{
		printf '\n'
		if [ "$POSTGRES_HOST_AUTH_METHOD" = trust ]; then
			printf '# warning trust is enabled for all connections\n'
		fi
		printf 'host all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD"
	} >>"$PGDATA/pg_hba.conf"
}

# A server for the init steps only: Unix socket, no TCP listener, so nothing outside the
# container can connect before initialisation is complete.
docker_temp_server_start() {
	if [ "$1" = postgres ]; then
		shift
	fi
	set -- "$@" -c listen_addresses='' -p "${PGPORT:-5432}"
	PGUSER="${PGUSER:-$POSTGRES_USER}" \
		pg_ctl -D "$PGDATA" -o "$(printf '%q ' "$@")" -w start
}

docker_temp_server_stop() {
	PGUSER="${PGUSER:-postgres}" pg_ctl -D "$PGDATA" -m fast -w stop
}

# psql against the temporary server, as POSTGRES_USER, on POSTGRES_DB unless it is empty.
docker_process_sql() {
	local query_runner=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
	if [ -n "$POSTGRES_DB" ]; then
		query_runner+=(--dbname "$POSTGRES_DB")
	fi
	PGHOST='' PGHOSTADDR='' "${query_runner[@]}" "$@"
}

docker_setup_db() {
	local exists
	# POSTGRES_DB is emptied for docker_process_sql only (it would pass --dbname), while
	# --set db= gets the current value: both on purpose (SC2097, SC2098).
	# shellcheck disable=SC2097,SC2098
	exists="$(POSTGRES_DB='' docker_process_sql --dbname postgres --set db="$POSTGRES_DB" --tuples-only <<-'EOSQL'
		SELECT 1 FROM pg_database WHERE datname = :'db' ;
	EOSQL
	)"
	if [ -z "$exists" ]; then
		# shellcheck disable=SC2097,SC2098
		POSTGRES_DB='' docker_process_sql --dbname postgres --set db="$POSTGRES_DB" <<-'EOSQL'
			CREATE DATABASE :"db" ;
		EOSQL
		printf '\n'
	fi
}

# *.sh: run if executable, else sourced (so it sees these functions); *.sql[.gz|.xz|.zst]: psql.
docker_process_init_files() {
	printf '\n'
	local f
	for f; do
		[ -e "$f" ] || continue
		case "$f" in
			*.sh)
				if [ -x "$f" ]; then
					printf '%s: running %s\n' "$0" "$f"
					"$f"
				else
					printf '%s: sourcing %s\n' "$0" "$f"
					# shellcheck disable=SC1090
					. "$f"
				fi
				;;
			*.sql) printf '%s: running %s\n' "$0" "$f"; docker_process_sql -f "$f"; printf '\n' ;;
			*.sql.gz) printf '%s: running %s\n' "$0" "$f"; gunzip -c "$f" | docker_process_sql; printf '\n' ;;
			*.sql.xz) printf '%s: running %s\n' "$0" "$f"; xzcat "$f" | docker_process_sql; printf '\n' ;;
			*.sql.zst) printf '%s: running %s\n' "$0" "$f"; zstd -dc "$f" | docker_process_sql; printf '\n' ;;
			*) printf '%s: ignoring %s\n' "$0" "$f" ;;
		esac
		printf '\n'
	done
}

# `postgres --help`, `--version` and the like need no data directory and no user switch.
_pg_want_help() {
	local arg
	for arg; do
		case "$arg" in
			-'?' | --help | --describe-config | -V | --version) return 0 ;;
		esac
	done
	return 1
}

_main() {
	# `docker run image -c foo=bar` means `postgres -c foo=bar`.
	if [ "${1:0:1}" = '-' ]; then
		set -- postgres "$@"
	fi

	if [ "$1" = postgres ] && ! _pg_want_help "$@"; then
		docker_setup_env
		docker_create_db_directories
		if [ "$(id -u)" = 0 ]; then
			# Again as postgres: real and effective ids, its groups; HOME as gosu would set it.
			export HOME=/var/lib/postgresql
			exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
		fi

		if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
			docker_verify_minimum_env
			# Fail early (before initdb) if the init directory is unreadable.
			ls /docker-entrypoint-initdb.d/ >/dev/null
			docker_init_database_dir
			pg_setup_hba_conf "$@"
			# Init scripts may connect over TCP to this temporary server; give them the password.
			export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
			docker_temp_server_start "$@"
			docker_setup_db
			docker_process_init_files /docker-entrypoint-initdb.d/*
			docker_temp_server_stop
			unset PGPASSWORD
			printf '\nPostgreSQL init process complete; ready for start up.\n\n'
		else
			printf '\nPostgreSQL Database directory appears to contain a database; Skipping initialization\n\n'
		fi
	fi

	exec "$@"
}

_main "$@"
