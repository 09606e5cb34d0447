#!/bin/sh
# The official nginx image's template step (nginxinc/docker-nginx, 20-envsubst-on-templates.sh):
#
#   every file under NGINX_ENVSUBST_TEMPLATE_DIR (/etc/nginx/templates), at any depth, whose name
#   ends in NGINX_ENVSUBST_TEMPLATE_SUFFIX (.template) is rendered with envsubst into
#   NGINX_ENVSUBST_OUTPUT_DIR (/etc/nginx/conf.d) at the same relative path minus the suffix,
#   subdirectories created as needed. Only the environment variables whose names match the
#   extended regex NGINX_ENVSUBST_FILTER (all of them when unset) are replaced, so nginx's own
#   $variables, never in the environment, stay as they are.
#
#   Files ending in NGINX_ENVSUBST_STREAM_TEMPLATE_SUFFIX (.stream-template) go to
#   NGINX_ENVSUBST_STREAM_OUTPUT_DIR (/etc/nginx/stream-conf.d), and a `stream { include ...; }`
#   block is appended to /etc/nginx/nginx.conf unless it has one.
#
# No template directory: nothing to do. Output directory not writable: a note, and nginx starts
# with what is there.
set -e

ME=$(basename "$0")

entrypoint_log() {
	if [ -z "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]; then
		echo "$@"
	fi
}

add_stream_block() {
	conffile=/etc/nginx/nginx.conf
	if grep -q -E '\s*stream\s*\{' "$conffile"; then
		entrypoint_log "$ME: $conffile contains a stream block; include $stream_output_dir/*.conf to enable stream templates"
	else
		touch "$conffile" 2>/dev/null || {
			entrypoint_log "$ME: info: can not modify $conffile (read-only file system?)"
			exit 0
		}
		entrypoint_log "$ME: Appending stream block to $conffile to include $stream_output_dir/*.conf"
		cat <<END >>"$conffile"
# added by "$ME" on "$(date)"
stream {
  include $stream_output_dir/*.conf;
}
END
	fi
}

# render SUFFIX OUTPUT_DIR: every template with that suffix into OUTPUT_DIR.
render() {
	find -L "$template_dir" -type f -name "*$1" -print | while IFS= read -r template; do
		relative_path="${template#"$template_dir/"}"
		output_path="$2/${relative_path%"$1"}"
		mkdir -p "$(dirname "$output_path")"
		entrypoint_log "$ME: Running envsubst on $template to $output_path"
		envsubst "$defined_envs" <"$template" >"$output_path"
	done
}

auto_envsubst() {
	template_dir="${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}"
	template_dir="${template_dir%/}"
	suffix="${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}"
	output_dir="${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}"
	stream_suffix="${NGINX_ENVSUBST_STREAM_TEMPLATE_SUFFIX:-.stream-template}"
	stream_output_dir="${NGINX_ENVSUBST_STREAM_OUTPUT_DIR:-/etc/nginx/stream-conf.d}"

	# envsubst's SHELL-FORMAT: `${NAME} ` for each variable name matching the filter. The regex is
	# read from ENVIRON, not spliced into the awk program, so any character in it is safe.
	defined_envs=$(awk 'BEGIN {
		filter = ENVIRON["NGINX_ENVSUBST_FILTER"]
		for (name in ENVIRON)
			if (name ~ /^[A-Za-z_][A-Za-z0-9_]*$/ && name ~ filter)
				printf "${%s} ", name
	}' </dev/null)

	[ -d "$template_dir" ] || return 0
	if [ ! -w "$output_dir" ]; then
		entrypoint_log "$ME: ERROR: $template_dir exists, but $output_dir is not writable"
		return 0
	fi
	render "$suffix" "$output_dir"

	if [ -n "$(find -L "$template_dir" -type f -name "*$stream_suffix" -print -quit)" ]; then
		mkdir -p "$stream_output_dir"
		if [ ! -w "$stream_output_dir" ]; then
			entrypoint_log "$ME: ERROR: $template_dir exists, but $stream_output_dir is not writable"
			return 0
		fi
		add_stream_block
		render "$stream_suffix" "$stream_output_dir"
	fi
}

auto_envsubst

exit 0
