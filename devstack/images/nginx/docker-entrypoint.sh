#!/bin/sh
# Entrypoint of the nginx stand-in, as the official image's (nginxinc/docker-nginx): when the
# command is nginx (or nginx-debug), run the configuration steps in /docker-entrypoint.d/ in
# version order (sort -V): executable *.sh files are run, executable *.envsh files are sourced
# (their exports reach the later steps and nginx itself), anything else is skipped with a note.
# A failing step stops the container. Then exec the command, so nginx is PID 1.
# NGINX_ENTRYPOINT_QUIET_LOGS=1 silences these notes.
set -e

entrypoint_log() {
	if [ -z "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]; then
		echo "$@"
	fi
}

if [ "$1" = nginx ] || [ "$1" = nginx-debug ]; then
	if find /docker-entrypoint.d/ -mindepth 1 -maxdepth 1 -type f -print -quit 2>/dev/null | read -r _; then
		entrypoint_log "$0: /docker-entrypoint.d/ is not empty, will attempt to perform configuration"
		entrypoint_log "$0: Looking for shell scripts in /docker-entrypoint.d/"
		steps="$(find -L /docker-entrypoint.d/ -type f -print | sort -V)"
		# Read on fd 3 from a here-document, not from a pipe: the loop stays in this shell (so a
		# sourced *.envsh keeps its exports) and the steps keep the container's stdin.
		while IFS= read -r f <&3; do
			[ -n "$f" ] || continue
			case "$f" in
				*.envsh)
					if [ -x "$f" ]; then
						entrypoint_log "$0: Sourcing $f"
						# shellcheck disable=SC1090
						. "$f"
					else
						entrypoint_log "$0: Ignoring $f, not executable"
					fi
					;;
				*.sh)
					if [ -x "$f" ]; then
						entrypoint_log "$0: Launching $f"
						"$f"
					else
						entrypoint_log "$0: Ignoring $f, not executable"
					fi
					;;
				*) entrypoint_log "$0: Ignoring $f" ;;
			esac
		done 3<<STEPS
$steps
STEPS
		entrypoint_log "$0: Configuration complete; ready for start up"
	else
		entrypoint_log "$0: No files found in /docker-entrypoint.d/, skipping configuration"
	fi
fi

exec "$@"
