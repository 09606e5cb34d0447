#!/bin/sh
# Entrypoint of the redis stand-in: the official image's (docker-library/redis), plus the one
# thing the official build changes in Redis itself: protected mode is off by default.
#
# Redis 7 without a config file listens on every interface (bind "* -::*") but, in protected
# mode, answers only loopback clients while the default user has no password, so other
# containers could not connect. The official image compiles protected mode off; Debian's build
# keeps it on, so `--protected-mode no` is added to the command line unless the caller passed
# --protected-mode or names a config file that sets it.
set -e

# `docker run image --port 7000` or `docker run image /path/redis.conf`: arguments of redis-server.
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi

if [ "$1" = redis-server ]; then
	protected_mode_given=
	for arg; do
		if [ "$arg" = --protected-mode ]; then
			protected_mode_given=1
		fi
	done
	case "${2:-}" in
		# Print-and-exit modes take no options.
		-v | --version | -h | --help | --test-memory | --check-system) protected_mode_given=1 ;;
		# Options, or `-` (config from stdin): nothing to look into.
		-*) ;;
		# A config file: if it sets protected-mode, that setting wins.
		?*)
			if [ -r "$2" ] && grep -Eiq '^[[:space:]]*protected-mode[[:space:]]' "$2"; then
				protected_mode_given=1
			fi
			;;
	esac
	if [ -z "$protected_mode_given" ]; then
		# After redis-server, or after the config file / `-`, which must stay first.
		shift
		case "${1:-}" in
			--*) set -- redis-server --protected-mode no "$@" ;;
			'') set -- redis-server --protected-mode no ;;
			*)
				first="$1"
				shift
				set -- redis-server "$first" --protected-mode no "$@"
				;;
		esac
	fi

	# Started as root: hand the working directory (/data, a volume) to redis and run this script
	# again as redis (setpriv, from util-linux in the base, in place of the official gosu).
	if [ "$(id -u)" = 0 ]; then
		find . \! -user redis -exec chown redis '{}' +
		export HOME=/var/lib/redis
		exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
	fi
fi

# Files Redis writes (RDB, AOF) readable by its own user only, unless a umask was chosen.
if [ "$(umask)" = 0022 ]; then
	umask 0077
fi

exec "$@"
