#!/usr/bin/env bash
# Deployment smoke test (README "Deployment smoke test"): builds the images with Podman, starts the compose
# stack with podman-compose on loopback, waits for health, launches a selection run through the webserver's
# GraphQL API, waits for its success, restarts the daemon and checks that run history and a sensor cursor
# survived, then tears everything down. Before the stack it builds the trainer image and runs it on a tiny
# CPU job (docker/trainer/smoke-test.sh). Prints each step's time. Not part of `pytest` (minutes, CPU heavy).
#
# The stack runs the local profile (DuckDB demo warehouse and objects in a volume of the `code` container)
# on the production instance (Postgres): the prod profile needs BigQuery and S3 credentials, which a smoke
# test has not; the instance, the images and the processes are the production ones either way.
#
# Needs: podman (4.3+), podman-compose (PODMAN_COMPOSE, else on PATH), curl, python3. Environment:
#   BASE_IMAGE      a local Debian bookworm image (default localhost/debian:bookworm, made on first use by
#                   docker/podman/make-base-image.sh, which needs root and debootstrap)
#   SMOKE_KEEP=1    leave the stack running (for a look in the UI); tear down later with SMOKE_DOWN=1
#   SMOKE_TRAINER=0 skip the trainer image's smoke test (docker/trainer/smoke-test.sh, run before the stack)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
export BASE_IMAGE="${BASE_IMAGE:-localhost/debian:bookworm}"
export BUILDAH_FORMAT=docker  # keeps HEALTHCHECK in built images (the OCI format drops it)
if [[ -z "${CONTAINERS_CONF:-}" && ! -e /etc/containers/containers.conf ]]; then
    export CONTAINERS_CONF="$here/podman/containers.conf"
fi
compose_cmd="${PODMAN_COMPOSE:-$(command -v podman-compose || true)}"
[[ -n "$compose_cmd" ]] || { echo "podman-compose not found: pip install podman-compose (any venv), or set PODMAN_COMPOSE" >&2; exit 2; }

export COMPOSE_PROJECT_NAME=data-engine-smoke
export DATA_ENGINE_IMAGE=localhost/data-engine:smoke
export POSTGRES_IMAGE=localhost/data-engine-postgres:15
export DATA_ENGINE_PROFILE=local
export DAGSTER_PG_PASSWORD="${DAGSTER_PG_PASSWORD:-smoke-$RANDOM$RANDOM}"
export WEBSERVER_BIND=127.0.0.1
export WEBSERVER_PORT="${WEBSERVER_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
compose() { "$compose_cmd" -p "$COMPOSE_PROJECT_NAME" -f compose.yaml -f compose.local-images.yaml "$@"; }
graphql_url="http://127.0.0.1:$WEBSERVER_PORT/graphql"
location="data_engine.definitions"

if [[ "${SMOKE_DOWN:-}" == 1 ]]; then compose down -v; exit 0; fi
logdir="$(mktemp -d)"
quietly() {  # run a noisy command with its output in $logdir/commands.log, shown only when it fails
    "$@" >>"$logdir/commands.log" 2>&1 || { tail -40 "$logdir/commands.log" >&2; return 1; }
}

step_start=$SECONDS
total_start=$SECONDS
step() {  # step NAME: ends the previous step (printing its time) and names the next
    if [[ -n "${step_name:-}" ]]; then printf '%-52s %4ds\n' "$step_name" $((SECONDS - step_start)); fi
    step_name="$1"; step_start=$SECONDS
    [[ -n "$step_name" ]] && echo "==> $step_name" >&2 || true
}
teardown() {
    local status=$?
    if [[ $status -ne 0 ]]; then
        echo "smoke test FAILED in step: ${step_name:-?}; last logs:" >&2
        for service in postgres code webserver daemon; do
            echo "--- $service" >&2; podman logs --tail 40 "${COMPOSE_PROJECT_NAME}_${service}_1" >&2 2>&1 || true
        done
    fi
    if [[ "${SMOKE_KEEP:-}" == 1 ]]; then
        echo "stack left running: http://127.0.0.1:$WEBSERVER_PORT (SMOKE_DOWN=1 $0 tears it down)" >&2
    else
        step "tear down (compose down -v)"
        compose down -v >/dev/null 2>&1 || true
        step ""
    fi
    rm -rf "$logdir"
    printf '%-52s %4ds\n' "total" $((SECONDS - total_start))
    [[ $status -eq 0 ]] && echo "smoke test PASSED" || echo "smoke test FAILED"
    exit $status
}
trap teardown EXIT

graphql() {  # graphql QUERY [VARIABLES_JSON] -> the response's "data" as JSON; fails on errors
    python3 - "$graphql_url" "$1" "${2:-{\}}" <<'PY'
import json, sys, urllib.request
url, query, variables = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
request = urllib.request.Request(url, json.dumps({"query": query, "variables": variables}).encode(),
                                 {"Content-Type": "application/json"})
body = json.load(urllib.request.urlopen(request, timeout=60))
if body.get("errors"):
    sys.exit(f"GraphQL errors: {body['errors']}")
print(json.dumps(body["data"]))
PY
}
jq_py() { python3 -c "import json, sys; data = json.load(sys.stdin); print($1)"; }
wait_healthy() {  # wait_healthy SERVICE TIMEOUT_S: runs the container's health check until it passes
    local container="${COMPOSE_PROJECT_NAME}_$1_1" deadline=$((SECONDS + $2))
    until podman healthcheck run "$container" >/dev/null 2>&1; do
        if (( SECONDS > deadline )); then echo "$1 not healthy after $2 s" >&2; return 1; fi
        if [[ "$(podman inspect -f '{{.State.Status}}' "$container" 2>/dev/null)" == exited ]]; then
            echo "$1 exited" >&2; return 1
        fi
        sleep 3
    done
}

step "base image ($BASE_IMAGE)"
podman image exists "$BASE_IMAGE" || "$here/podman/make-base-image.sh" "$BASE_IMAGE"

if [[ "${SMOKE_TRAINER:-1}" == 1 ]]; then
    step "trainer image: build, train and evaluate (docker/trainer/smoke-test.sh)"
    "$here/trainer/smoke-test.sh"
fi

step "build images (podman-compose build)"
compose down -v >/dev/null 2>&1 || true  # a stack left over by an interrupted run
quietly compose build postgres code
podman images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "data-engine(-postgres)?:" >&2

# Podman < 4.6 ignores depends_on conditions (and runs health checks only when asked), so the services
# start in their dependency order here, each once the previous one is healthy.
step "start postgres, wait for health"
quietly compose up -d postgres  # (Podman without systemd logs that it cannot schedule health checks)
wait_healthy postgres 120

step "start the code server, wait for health"
quietly compose up -d --no-deps code
wait_healthy code 300

step "start webserver and daemon, wait for health"
quietly compose up -d --no-deps webserver daemon
wait_healthy webserver 300
wait_healthy daemon 300

# The local profile writes a week of demo data ending yesterday on first use; select yesterday.
day="$(date -u -d yesterday +%F)"
partition="$day|municipals"
step "launch selection_job $partition through GraphQL"
launched="$(graphql 'mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}' "{\"params\": {\"selector\": {\"repositoryLocationName\": \"$location\", \"repositoryName\": \"__repository__\",
     \"jobName\": \"selection_job\"}, \"executionMetadata\": {\"tags\": [{\"key\": \"dagster/partition\", \"value\": \"$partition\"},
     {\"key\": \"dagster/partition/date\", \"value\": \"$day\"}, {\"key\": \"dagster/partition/model\", \"value\": \"municipals\"}]}}}")"
run_id="$(jq_py 'data["launchRun"].get("run", {}).get("runId", "")' <<<"$launched")"
[[ -n "$run_id" ]] || { echo "launch failed: $launched" >&2; exit 1; }
echo "run $run_id" >&2

step "wait for the run's success"
status_query='query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }'
deadline=$((SECONDS + 600))
while :; do
    status="$(graphql "$status_query" "{\"id\": \"$run_id\"}" | jq_py 'data["runOrError"].get("status")')"
    case "$status" in
        SUCCESS) break ;;
        FAILURE|CANCELED) echo "run $run_id ended $status" >&2; podman logs --tail 60 "${COMPOSE_PROJECT_NAME}_code_1" >&2; exit 1 ;;
    esac
    (( SECONDS < deadline )) || { echo "run $run_id still $status after 600 s" >&2; exit 1; }
    sleep 3
done

step "set a sensor cursor, restart the daemon"
selector="{\"repositoryLocationName\": \"$location\", \"repositoryName\": \"__repository__\", \"sensorName\": \"cvat_review_sensor\"}"
cursor="smoke-cursor-$RANDOM"
graphql 'mutation($s: SensorSelector!, $c: String) { setSensorCursor(sensorSelector: $s, cursor: $c) { __typename } }' \
    "{\"s\": $selector, \"c\": \"$cursor\"}" >/dev/null
restarted_at="$(date +%s)"
podman restart --time 30 "${COMPOSE_PROJECT_NAME}_daemon_1" >/dev/null
# Healthy alone could be the old daemon's recent heartbeats: wait for every daemon's heartbeat after the restart.
deadline=$((SECONDS + 300))
until graphql '{ instance { daemonHealth { allDaemonStatuses { required lastHeartbeatTime } } } }' \
      | jq_py "all(d['lastHeartbeatTime'] and d['lastHeartbeatTime'] > $restarted_at for d in data['instance']['daemonHealth']['allDaemonStatuses'] if d['required'])" \
      | grep -q True; do
    (( SECONDS < deadline )) || { echo "the restarted daemon sent no heartbeats within 300 s" >&2; exit 1; }
    sleep 3
done
wait_healthy daemon 60

step "check run history and the sensor cursor survived"
history="$(graphql 'query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }' "{\"id\": \"$run_id\"}")"
[[ "$(jq_py 'data["runOrError"]["status"]' <<<"$history")" == SUCCESS ]] || { echo "run history lost: $history" >&2; exit 1; }
kept="$(graphql 'query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) {
  ... on Sensor { sensorState { typeSpecificData { ... on SensorData { lastCursor } } } } } }' "{\"s\": $selector}" \
  | jq_py 'data["sensorOrError"]["sensorState"]["typeSpecificData"]["lastCursor"]')"
[[ "$kept" == "$cursor" ]] || { echo "sensor cursor lost: got '$kept', want '$cursor'" >&2; exit 1; }
