#!/usr/bin/env bash
# Issue 12 point 7: `scripts/services.sh down` returns within seconds whether the RabbitMQ node
# is up, already down, running without its pid file, or half-started. Runs a throwaway stack
# on its own ports and state directory, so it never touches the dev/test/bench/chaos stacks.
# Needs RabbitMQ installed (scripts/test runs this after `services.sh up`).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
services=$repo/scripts/services.sh
state=$(mktemp -d /var/tmp/payhook-downtest.XXXXXX)
chmod 755 "$state"
export PAYHOOK_STATE_DIR=$state PAYHOOK_PG_PORT=58432 PAYHOOK_AMQP_PORT=58672 PAYHOOK_DIST_PORT=48672
stack=(--stack downtest)
limit=30
failures=0

vm_running() { pgrep -f "beam.smp .*-home $state/rabbitmq( |$)" >/dev/null; }
cleanup() {
  pkill -9 -f "beam.smp .*-home $state/rabbitmq( |$)" 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT

# Runs `down` with a hard cap well above $limit, so a hang fails the test instead of CI.
check_down() {
  local name=$1 start=$SECONDS rc=0
  timeout 120 "$services" down "${stack[@]}" >/dev/null 2>&1 || rc=$?
  local took=$((SECONDS - start))
  if [ "$rc" != 0 ]; then
    echo "FAIL $name: down exited $rc after ${took}s"; failures=$((failures + 1))
  elif [ "$took" -gt "$limit" ]; then
    echo "FAIL $name: down took ${took}s (limit ${limit}s)"; failures=$((failures + 1))
  elif vm_running; then
    echo "FAIL $name: the node still runs after down"; failures=$((failures + 1))
  else
    echo "ok   $name (${took}s)"
  fi
}

"$services" start-rabbit "${stack[@]}" >/dev/null
check_down down_stops_a_running_node

check_down down_returns_when_the_node_is_already_down

"$services" start-rabbit "${stack[@]}" >/dev/null
rm -f "$state/rabbitmq/pid"
check_down down_stops_a_node_whose_pid_file_is_missing

# Half-started: the start is cut off a moment after it launched the VM.
timeout 2 "$services" start-rabbit "${stack[@]}" >/dev/null 2>&1 || true
check_down down_stops_a_half_started_node

if [ "$failures" -gt 0 ]; then
  echo "services_down: $failures failed"
  exit 1
fi
echo "services_down: all passed"
