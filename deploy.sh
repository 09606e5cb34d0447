#!/usr/bin/env bash
# conduit-api deployment on one Docker host (docker-compose.production.yml), without dropping
# requests: the new release starts beside the one serving, gets traffic only once every new
# container is healthy and ready, and the old containers are drained after the router (the nginx
# between the edge and the app) stopped sending them requests. A release that never gets ready is removed and the old one keeps serving.
#
#   ./deploy.sh production|staging [--dry-run] [--no-build]   build, migrate, roll out
#   ./deploy.sh rollback [production|staging]                 roll out the previous tag
#   ./deploy.sh status [production|staging]                   services, tags, readiness
#   ./deploy.sh --help
#
# Settings: production reads .env, staging .env.staging (ENV_FILE overrides). Tags: the image is
# tagged with the git commit; .deploy/<target>/current_tag and previous_tag record what runs and
# what ran before. DEPLOYMENT.md ("Rollout") describes every step.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$SCRIPT_DIR"

COMPOSE_FILE="docker-compose.production.yml"
HEALTH_TIMEOUT="${HEALTH_TIMEOUT:-120}"
HEALTH_INTERVAL="${HEALTH_INTERVAL:-1}"
STOP_TIMEOUT="${STOP_TIMEOUT:-40}"
STATE_ROOT="${STATE_DIR:-.deploy}"
REQUIRED_SETTINGS=(SECRET_KEY POSTGRES_PASSWORD DATABASE_URL METRICS_TOKEN)
# Fragments of the documented placeholders (.env.example) and classic defaults.
PLACEHOLDER_PATTERN='changeme|change-me|change-this|replace-with|placeholder|example|^secret$|^password$'
# Run inside an app container: exits 0 only when the app answers readiness 200.
READINESS_PROBE="import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/readiness', timeout=2)"
UPSTREAM_FILE=/etc/nginx/upstream.conf
DRY_RUN=0
BUILD=1
TARGET=""
STEP_STARTED=""

usage() {
  cat <<'EOF'
Usage:
  ./deploy.sh production|staging [--dry-run] [--no-build]
      Validate the settings, build the image (tagged with the git commit), run the migrations,
      start the new release beside the serving one, switch the router to it once every new
      container is healthy and ready, then drain and remove the old containers. A release
      that never gets ready gets no traffic: it is removed and the old one keeps serving.
  ./deploy.sh rollback [production|staging]
      Roll out the previously deployed tag the same way (no migrations: see DEPLOYMENT.md).
  ./deploy.sh status [production|staging]
      Show services, app containers with their tags, deployed tags and readiness.
  ./deploy.sh --help
      This text.

--dry-run   validate and print what would change, without changing anything.
--no-build  deploy ${IMAGE_NAME}:${IMAGE_TAG} from its registry (pulled unless already here)
            instead of building it.
Environment: ENV_FILE, IMAGE_NAME, IMAGE_TAG, APP_REPLICAS (2), HEALTH_URL, HEALTH_TIMEOUT (120 s),
HEALTH_INTERVAL (1 s), STOP_TIMEOUT (40 s), STATE_DIR, BUILD_NETWORK, PIP_CONFIG_FILE, PIP_CERT.
EOF
}

log() {
  printf '%s [deploy] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"
}

fail() {
  log "ERROR: $*"
  exit 1
}

# Step lines: "step 3/6: migrations" ... "step 3/6 done in 4.2s".
step() {
  STEP_STARTED="$EPOCHREALTIME"
  CURRENT_STEP="$1"
  log "step ${CURRENT_STEP}"
}

step_done() {
  local elapsed
  elapsed="$(awk -v a="$STEP_STARTED" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')"
  log "step ${CURRENT_STEP%%:*} done in ${elapsed}s"
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
  [ -f "$ENV_FILE" ] || return 0
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
  # Compose names the app image ${APP_IMAGE}:${APP_TAG}; keep it the image this script builds.
  IMAGE_NAME="${IMAGE_NAME:-$(setting APP_IMAGE | grep . || echo conduit-api)}"
  export APP_IMAGE="$IMAGE_NAME"
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
  value="$(replicas)"
  if ! [[ "$value" =~ ^[1-9][0-9]*$ ]]; then
    log "ERROR: APP_REPLICAS must be a whole number of at least 1 (got '${value}')"
    problems=$((problems + 1))
  fi
  [ "$problems" -eq 0 ] || fail "${problems} setting(s) to fix in ${ENV_FILE}; nothing was changed"
  compose config --quiet || fail "${COMPOSE_FILE} does not validate with ${ENV_FILE}"
  log "environment ok"
}

replicas() {
  setting APP_REPLICAS | grep . || echo 2
}

image_tag() {
  if [ -n "${IMAGE_TAG:-}" ]; then
    printf '%s' "$IMAGE_TAG"
    return
  fi
  [ "$BUILD" -eq 1 ] || fail "--no-build needs IMAGE_TAG: the tag to pull"
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

# One deploy at a time per target: a second one waits for nothing and says so.
take_lock() {
  [ "$DRY_RUN" -eq 1 ] && return 0
  command -v flock >/dev/null 2>&1 || return 0
  mkdir -p "$STATE_DIR"
  exec 9>"${STATE_DIR}/.lock"
  flock -n 9 || fail "another deploy of ${TARGET} is running (${STATE_DIR}/.lock)"
}

health_url() {
  printf '%s' "${HEALTH_URL:-http://127.0.0.1:$(setting HTTP_PORT | grep . || echo 80)/health/readiness}"
}

build_image() {
  local tag="$1"
  local args=(build --pull --label "org.opencontainers.image.revision=${tag}"
    -t "${IMAGE_NAME}:${tag}" -t "${IMAGE_NAME}:${TARGET}")
  # The build host's pip settings reach the builder stage as BuildKit secrets, never a layer.
  if [ -n "${PIP_CONFIG_FILE:-}" ] && [ -f "$PIP_CONFIG_FILE" ]; then
    args+=(--secret "id=pip_conf,src=${PIP_CONFIG_FILE}")
  fi
  if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
    args+=(--secret "id=pip_cert,src=${PIP_CERT}")
  fi
  if [ -n "${BUILD_NETWORK:-}" ]; then
    args+=(--network "$BUILD_NETWORK")
  fi
  DOCKER_BUILDKIT=1 run docker "${args[@]}" .
}

# `alembic upgrade head` in the one-shot migrate container of release TAG. A database at a
# revision this release does not know was migrated by a later release (this one is a rollback
# target, or its redeploy): expand/contract keeps this release working on that schema, so there
# is nothing to do. Any other failure fails.
migrate() {
  local tag="$1" output status=0
  if [ "$DRY_RUN" -eq 1 ]; then
    log "dry-run: compose run --rm migrate"
    return 0
  fi
  output="$(APP_TAG="$tag" compose run --rm migrate 2>&1)" || status=$?
  printf '%s\n' "$output" | sed 's/^/    /'
  if [ "$status" -ne 0 ] && grep -q "Can't locate revision identified by" <<<"$output"; then
    log "WARNING: the database is at a revision ${IMAGE_NAME}:${tag} does not know: a later release migrated it, and expand/contract keeps this one working on that schema; no migration was run"
    return 0
  fi
  return "$status"
}

# Running app containers of this target (any release), oldest first.
app_containers() {
  compose ps --quiet --status running app 2>/dev/null || true
}

container_name() {
  docker inspect --format '{{.Name}}' "$1" | sed 's#^/##'
}

container_tag() {
  docker inspect --format '{{.Config.Image}}' "$1" | sed 's#.*:##'
}

# Why container $1 is not (yet) serving, or nothing when it is healthy and ready.
# Exit 2 means it will never be: it exited or restarted (a crash at start).
not_ready_reason() {
  local id="$1" state
  state="$(docker inspect --format \
    '{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' \
    "$id" 2>/dev/null)" || { echo "container ${id:0:12} is gone"; return 2; }
  local status restarts exit_code health
  read -r status restarts exit_code health <<<"$state"
  if [ "$status" = exited ] || [ "$status" = dead ]; then
    echo "container $(container_name "$id") crashed at start (exited with code ${exit_code})"
    return 2
  fi
  if [ "$restarts" -gt 0 ] || [ "$status" = restarting ]; then
    echo "container $(container_name "$id") crashed at start (restarted ${restarts} time(s) by Docker)"
    return 2
  fi
  if [ "$health" != healthy ]; then
    echo "container $(container_name "$id") healthcheck is ${health}"
    return 1
  fi
  if ! docker exec "$id" python -c "$READINESS_PROBE" >/dev/null 2>&1; then
    echo "container $(container_name "$id") does not answer readiness 200"
    return 1
  fi
  return 0
}

# Waits until every container given is healthy and ready; fails at once on a crash.
wait_ready() {
  local deadline=$((SECONDS + HEALTH_TIMEOUT)) id reason code pending
  while :; do
    pending=""
    for id in "$@"; do
      code=0
      reason="$(not_ready_reason "$id")" || code=$?
      if [ "$code" -eq 2 ]; then
        FAILURE="$reason"
        FAILED_CONTAINER="$id"
        return 1
      elif [ "$code" -ne 0 ]; then
        pending="$reason"
        FAILED_CONTAINER="$id"
      fi
    done
    [ -z "$pending" ] && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      FAILURE="not ready after ${HEALTH_TIMEOUT}s: ${pending}"
      return 1
    fi
    sleep "$HEALTH_INTERVAL"
  done
}

# Points the router (deploy/nginx/router.conf) at the given app containers only: rewrite its
# upstream file, check, reload. The router's clients are the edge nginx's one-request
# connections, which a reload never cuts; the edge, which holds the browsers' keep-alive
# connections, is not reloaded. The previous file comes back if the check fails.
switch_router() {
  local router id lines=""
  router="$(compose ps --quiet --status running router)"
  [ -n "$router" ] || return 1
  for id in "$@"; do
    lines+="server $(container_name "$id"):8000 max_fails=3 fail_timeout=10s;"$'\n'
  done
  printf '# written by deploy.sh %s\n%s' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$lines" \
    | docker exec -i "$router" sh -c "cat > ${UPSTREAM_FILE}.next \
        && cp ${UPSTREAM_FILE} ${UPSTREAM_FILE}.previous \
        && mv ${UPSTREAM_FILE}.next ${UPSTREAM_FILE} \
        && if nginx -t -q; then nginx -s reload; \
           else mv ${UPSTREAM_FILE}.previous ${UPSTREAM_FILE}; exit 1; fi"
}

# Starts SERVICE (router, nginx) when it is not running; a running one is left alone.
ensure_running() {
  if [ -z "$(compose ps --quiet --status running "$1")" ]; then
    compose up --detach --no-deps --wait "$1"
  fi
}

wait_nginx_ready() {
  local url deadline
  url="$(health_url)"
  deadline=$((SECONDS + 30))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if curl -fsS -o /dev/null --max-time 5 "$url" 2>/dev/null; then
      return 0
    fi
    sleep 0.5
  done
  return 1
}

# The rollout: new containers beside the old, wait, switch, drain. Returns 1 (old still serving)
# when the new release does not get ready; FAILURE says why.
rollout() {
  local tag="$1" want old=() new=() all=() id
  want="$(replicas)"
  if [ "$DRY_RUN" -eq 1 ]; then
    log "dry-run: would start ${want} app container(s) on ${IMAGE_NAME}:${tag} beside the serving ones, switch the router to them once ready, then drain the old ones"
    return 0
  fi
  mapfile -t old < <(app_containers)
  # Leftovers that are not running (a stopped container, an interrupted deploy) would count in
  # --scale below and be started: remove them first.
  mapfile -t all < <(compose ps --quiet --all app)
  for id in "${all[@]}"; do
    [[ " ${old[*]} " == *" ${id} "* ]] || docker rm --force "$id" >/dev/null
  done

  step "4/6: start ${want} container(s) of ${IMAGE_NAME}:${tag} beside the ${#old[@]} serving"
  APP_TAG="$tag" compose up --detach --no-deps --no-recreate --scale "app=$((${#old[@]} + want))" app
  mapfile -t all < <(compose ps --quiet --all app)
  for id in "${all[@]}"; do
    [[ " ${old[*]} " == *" ${id} "* ]] || new+=("$id")
  done
  [ "${#new[@]}" -gt 0 ] || { FAILURE="compose started no new app container"; return 1; }
  log "waiting for $(for id in "${new[@]}"; do printf '%s ' "$(container_name "$id")"; done)to be healthy and ready (up to ${HEALTH_TIMEOUT}s)"
  if ! wait_ready "${new[@]}"; then
    log "last lines of $(container_name "$FAILED_CONTAINER"):"
    docker logs --tail 20 "$FAILED_CONTAINER" 2>&1 | sed 's/^/    /' || true
    docker rm --force "${new[@]}" >/dev/null
    return 1
  fi
  step_done

  step "5/6: switch the router to the new containers"
  ensure_running router
  if ! switch_router "${new[@]}"; then
    docker rm --force "${new[@]}" >/dev/null
    FAILURE="the router refused the new upstream (nginx -t); it still serves the old containers"
    return 1
  fi
  ensure_running nginx
  if ! wait_nginx_ready; then
    if [ "${#old[@]}" -gt 0 ]; then
      switch_router "${old[@]}" || true
    fi
    docker rm --force "${new[@]}" >/dev/null
    FAILURE="$(health_url) did not answer 200 through nginx after the switch; switched back"
    return 1
  fi
  step_done

  step "6/6: drain and remove the ${#old[@]} old container(s)"
  if [ "${#old[@]}" -gt 0 ]; then
    # The router sends them nothing new now; SIGTERM starts the app's lame-duck drain
    # (readiness 503, in-flight requests finish) within STOP_TIMEOUT.
    docker stop --time "$STOP_TIMEOUT" "${old[@]}" >/dev/null
    docker rm "${old[@]}" >/dev/null
  fi
  step_done
}

show_status() {
  log "services:"
  compose ps || true
  local id
  for id in $(app_containers); do
    log "app container $(container_name "$id"): ${IMAGE_NAME}:$(container_tag "$id")"
  done
  log "deployed: $(read_state current_tag || true); previous: $(read_state previous_tag || true)"
}

report_failure() {
  local tag="$1" serving="$2"
  log "ERROR: ${IMAGE_NAME}:${tag} was not deployed: ${FAILURE}"
  log "it got no traffic and was removed; ${serving:-nothing} keeps serving"
  show_status
  exit 1
}

deploy() {
  validate
  take_lock
  local tag current
  tag="$(image_tag)"
  current="$(read_state current_tag)"
  log "deploying ${IMAGE_NAME}:${tag} to ${TARGET} (running now: ${current:-nothing})"

  if [ "$BUILD" -eq 1 ]; then
    step "1/6: build ${IMAGE_NAME}:${tag}"
    build_image "$tag"
  elif docker image inspect "${IMAGE_NAME}:${tag}" >/dev/null 2>&1; then
    # A release tag names one image for good: one already on the host is not pulled again.
    step "1/6: ${IMAGE_NAME}:${tag} is already on this host"
  else
    step "1/6: pull ${IMAGE_NAME}:${tag}"
    run docker pull "${IMAGE_NAME}:${tag}"
  fi
  step_done

  step "2/6: postgres and redis"
  APP_TAG="$tag" run compose up --detach --wait postgres redis
  step_done

  step "3/6: migrations (alembic upgrade head, under an advisory lock)"
  migrate "$tag" || fail "migrations failed; nothing was switched and ${current:-nothing} keeps serving"
  step_done

  if [ "$DRY_RUN" -eq 1 ]; then
    rollout "$tag"
    log "dry-run complete: nothing was changed"
    return 0
  fi
  rollout "$tag" || report_failure "$tag" "$current"
  if [ -n "$current" ] && [ "$current" != "$tag" ]; then
    write_state previous_tag "$current"
  fi
  write_state current_tag "$tag"
  log "deployed ${IMAGE_NAME}:${tag}"
  show_status
}

rollback() {
  validate
  take_lock
  local previous current
  previous="$(read_state previous_tag)"
  current="$(read_state current_tag)"
  [ -n "$previous" ] || fail "no previous tag recorded in ${STATE_DIR}/previous_tag"
  docker image inspect "${IMAGE_NAME}:${previous}" >/dev/null 2>&1 \
    || fail "image ${IMAGE_NAME}:${previous} is not on this host (docker pull it first)"
  log "rolling back from ${IMAGE_NAME}:${current:-nothing} to ${IMAGE_NAME}:${previous}"
  rollout "$previous" || report_failure "$previous" "$current"
  write_state current_tag "$previous"
  write_state previous_tag "$current"
  log "rolled back to ${IMAGE_NAME}:${previous}"
  show_status
}

main() {
  local command="${1:-}"
  [ $# -gt 0 ] && shift
  local args=()
  local arg
  for arg in "$@"; do
    case "$arg" in
      --dry-run) DRY_RUN=1 ;;
      --no-build) BUILD=0 ;;
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
