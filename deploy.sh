#!/usr/bin/env bash
# conduit-api deployment on one Docker host (docker-compose.production.yml).
#
#   ./deploy.sh production|staging [--dry-run]   validate, build, migrate, roll, verify (or roll back)
#   ./deploy.sh rollback [production|staging]    redeploy the previously deployed image tag
#   ./deploy.sh status [production|staging]      services, deployed tags, readiness
#   ./deploy.sh --help
#
# Settings: production reads .env, staging .env.staging (ENV_FILE overrides). Tags: the image is
# tagged with the git commit; .deploy/<target>/current_tag and previous_tag record what runs and
# what ran before, so a failed health check rolls back to the previous tag automatically.
# Tunables (environment): ENV_FILE, IMAGE_NAME (conduit-api), IMAGE_TAG (git SHA),
# HEALTH_URL (http://127.0.0.1:${HTTP_PORT:-80}/health/readiness, i.e. through nginx),
# HEALTH_TIMEOUT (120 s), HEALTH_INTERVAL (3 s), STATE_DIR (.deploy).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$SCRIPT_DIR"

COMPOSE_FILE="docker-compose.production.yml"
IMAGE_NAME="${IMAGE_NAME:-conduit-api}"
HEALTH_TIMEOUT="${HEALTH_TIMEOUT:-120}"
HEALTH_INTERVAL="${HEALTH_INTERVAL:-3}"
STATE_ROOT="${STATE_DIR:-.deploy}"
REQUIRED_SETTINGS=(SECRET_KEY POSTGRES_PASSWORD DATABASE_URL METRICS_TOKEN)
# Fragments of the documented placeholders (.env.example) and classic defaults.
PLACEHOLDER_PATTERN='changeme|change-me|change-this|replace-with|placeholder|example|^secret$|^password$'
DRY_RUN=0
TARGET=""

usage() {
  cat <<'EOF'
Usage:
  ./deploy.sh production|staging [--dry-run]  Validate, build and tag the image with the git SHA,
                                              run migrations, roll the app, poll readiness through
                                              nginx; on failure roll back to the previous tag.
  ./deploy.sh rollback [production|staging]   Redeploy the previous tag (default: production).
  ./deploy.sh status [production|staging]     Show services, deployed tags and readiness.
  ./deploy.sh --help                          This text.

--dry-run validates and prints every command that would change something, without running it.
Environment: ENV_FILE, IMAGE_NAME, IMAGE_TAG, HEALTH_URL, HEALTH_TIMEOUT, HEALTH_INTERVAL, STATE_DIR.
EOF
}

log() {
  printf '%s [deploy] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"
}

fail() {
  log "ERROR: $*"
  exit 1
}

# Runs a command that changes something; with --dry-run only shows it.
run() {
  if [ "$DRY_RUN" -eq 1 ]; then
    log "dry-run: $*"
  else
    "$@"
  fi
}

compose() {
  docker compose --project-name "conduit-${TARGET}" --env-file "$ENV_FILE" -f "$COMPOSE_FILE" "$@"
}

# The value of KEY: the environment wins (as in Compose), else the last KEY= line of the env file.
setting() {
  local key="$1" value=""
  if [ -n "${!key:-}" ]; then
    printf '%s' "${!key}"
    return
  fi
  value="$(sed -n "s/^[[:space:]]*${key}[[:space:]]*=[[:space:]]*//p" "$ENV_FILE" | tail -n 1)"
  value="${value%\"}"
  value="${value#\"}"
  value="${value%\'}"
  value="${value#\'}"
  printf '%s' "$value"
}

example_value() {
  [ -f .env.example ] || return 0
  sed -n "s/^${1}=//p" .env.example | tail -n 1
}

select_target() {
  case "${1:-production}" in
    production) ENV_FILE="${ENV_FILE:-.env}" ;;
    staging) ENV_FILE="${ENV_FILE:-.env.staging}" ;;
    *) usage >&2; fail "unknown target: ${1}" ;;
  esac
  TARGET="${1:-production}"
  STATE_DIR="${STATE_ROOT}/${TARGET}"
  export CONDUIT_ENV_FILE="$ENV_FILE"
}

validate() {
  log "validating the environment for ${TARGET} (${ENV_FILE})"
  command -v docker >/dev/null 2>&1 || fail "docker is not installed"
  docker compose version >/dev/null 2>&1 || fail "the docker compose plugin is not available"
  command -v curl >/dev/null 2>&1 || fail "curl is needed to poll the health endpoint"
  [ -f "$ENV_FILE" ] || fail "${ENV_FILE} is missing: copy .env.example and fill in the secrets"
  local key value problems=0
  for key in "${REQUIRED_SETTINGS[@]}"; do
    value="$(setting "$key")"
    if [ -z "$value" ]; then
      log "ERROR: ${key} is not set in ${ENV_FILE}"
      problems=$((problems + 1))
    elif printf '%s' "$value" | grep -Eiq "$PLACEHOLDER_PATTERN" \
      || [ "$value" = "$(example_value "$key")" ]; then
      log "ERROR: ${key} still has a placeholder value"
      problems=$((problems + 1))
    fi
  done
  value="$(setting SECRET_KEY)"
  if [ -n "$value" ] && [ "${#value}" -lt 32 ]; then
    log "ERROR: SECRET_KEY must be at least 32 characters (openssl rand -hex 32)"
    problems=$((problems + 1))
  fi
  [ "$problems" -eq 0 ] || fail "${problems} setting(s) to fix in ${ENV_FILE}; nothing was changed"
  compose config --quiet || fail "${COMPOSE_FILE} does not validate with ${ENV_FILE}"
  log "environment ok"
}

image_tag() {
  if [ -n "${IMAGE_TAG:-}" ]; then
    printf '%s' "$IMAGE_TAG"
    return
  fi
  local sha
  sha="$(git rev-parse --short=12 HEAD 2>/dev/null)" || fail "not a git checkout: set IMAGE_TAG"
  if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    sha="${sha}-dirty"
  fi
  printf '%s' "$sha"
}

read_state() {
  local file="${STATE_DIR}/$1"
  if [ -f "$file" ]; then cat "$file"; fi
}

write_state() {
  [ "$DRY_RUN" -eq 1 ] && return 0
  mkdir -p "$STATE_DIR"
  printf '%s\n' "$2" >"${STATE_DIR}/$1"
}

health_url() {
  printf '%s' "${HEALTH_URL:-http://127.0.0.1:$(setting HTTP_PORT | grep . || echo 80)/health/readiness}"
}

wait_healthy() {
  local url deadline
  url="$(health_url)"
  deadline=$((SECONDS + HEALTH_TIMEOUT))
  log "polling ${url} (up to ${HEALTH_TIMEOUT}s)"
  while [ "$SECONDS" -lt "$deadline" ]; do
    if curl -fsS -o /dev/null --max-time 5 "$url" 2>/dev/null; then
      log "ready: ${url} answered 2xx"
      return 0
    fi
    sleep "$HEALTH_INTERVAL"
  done
  log "not ready after ${HEALTH_TIMEOUT}s: ${url}"
  return 1
}

# Start (or replace) the app containers on TAG, then make nginx re-resolve the app's address.
roll_app() {
  local tag="$1"
  log "rolling the app to ${IMAGE_NAME}:${tag}"
  APP_TAG="$tag" run compose up -d --no-deps --remove-orphans app
  APP_TAG="$tag" run compose up -d --no-deps nginx
  run compose exec -T nginx nginx -s reload
}

show_status() {
  log "services:"
  compose ps || true
  log "deployed: $(read_state current_tag || true); previous: $(read_state previous_tag || true)"
}

rollback_to() {
  local tag="$1"
  log "rolling back to ${IMAGE_NAME}:${tag}"
  roll_app "$tag"
  if [ "$DRY_RUN" -eq 1 ] || wait_healthy; then
    write_state current_tag "$tag"
    log "rollback to ${tag} complete"
    return 0
  fi
  log "ERROR: the rollback to ${tag} is not healthy either"
  return 1
}

deploy() {
  validate
  local tag current
  tag="$(image_tag)"
  current="$(read_state current_tag)"
  log "deploying ${IMAGE_NAME}:${tag} to ${TARGET} (running now: ${current:-nothing})"

  log "step 1/5: build"
  run docker build --pull --label "org.opencontainers.image.revision=${tag}" \
    -t "${IMAGE_NAME}:${tag}" -t "${IMAGE_NAME}:${TARGET}" .

  log "step 2/5: postgres and redis"
  APP_TAG="$tag" run compose up -d --wait postgres redis

  log "step 3/5: migrations (alembic upgrade head, under an advisory lock)"
  APP_TAG="$tag" run compose run --rm migrate || fail "migrations failed; the app was not changed"

  log "step 4/5: app"
  roll_app "$tag"

  log "step 5/5: readiness through nginx"
  if [ "$DRY_RUN" -eq 1 ]; then
    log "dry-run: would poll $(health_url)"
    log "dry-run complete: nothing was changed"
    return 0
  fi
  if wait_healthy; then
    if [ -n "$current" ] && [ "$current" != "$tag" ]; then
      write_state previous_tag "$current"
    fi
    write_state current_tag "$tag"
    log "deployed ${IMAGE_NAME}:${tag}"
    show_status
    return 0
  fi

  log "ERROR: ${IMAGE_NAME}:${tag} did not become ready"
  if [ -n "$current" ] && [ "$current" != "$tag" ]; then
    rollback_to "$current" || true
  else
    log "no previous tag recorded: nothing to roll back to"
  fi
  show_status
  exit 1
}

rollback() {
  validate
  local previous current
  previous="$(read_state previous_tag)"
  current="$(read_state current_tag)"
  [ -n "$previous" ] || fail "no previous tag recorded in ${STATE_DIR}/previous_tag"
  if rollback_to "$previous"; then
    write_state previous_tag "$current"
    show_status
    return 0
  fi
  show_status
  exit 1
}

main() {
  local command="${1:-}"
  [ $# -gt 0 ] && shift
  local args=()
  local arg
  for arg in "$@"; do
    case "$arg" in
      --dry-run) DRY_RUN=1 ;;
      -h | --help) usage; exit 0 ;;
      *) args+=("$arg") ;;
    esac
  done
  case "$command" in
    production | staging)
      [ "${#args[@]}" -eq 0 ] || fail "unexpected argument: ${args[0]}"
      select_target "$command"
      deploy
      ;;
    rollback)
      select_target "${args[0]:-production}"
      rollback
      ;;
    status)
      select_target "${args[0]:-production}"
      show_status
      if curl -fsS -o /dev/null --max-time 5 "$(health_url)" 2>/dev/null; then
        log "readiness: ok ($(health_url))"
      else
        log "readiness: FAILING ($(health_url))"
      fi
      ;;
    -h | --help) usage ;;
    "") usage >&2; exit 2 ;;
    *) usage >&2; fail "unknown command: ${command}" ;;
  esac
}

main "$@"
