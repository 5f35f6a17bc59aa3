#!/usr/bin/env bash
# A real Prometheus (Debian's binary) scrapes a running payhook-ingest and payhook-worker:
# after one signed webhook, `payhook_webhook_requests_total` must be > 0 through Prometheus's
# HTTP API, and every metric the alerts and the dashboard use must exist in the binaries'
# real /metrics output (deploy/metric_names.sh), so a renamed metric cannot break an alert.
#
# Needs DATABASE_URL/AMQP_URL of a running stack (scripts/test sets them) and the debug
# binaries (built here). Installs Debian's prometheus if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[e2e-prometheus] %s\n' "$*" >&2; }
: "${DATABASE_URL:?run under scripts/test, or eval \"\$(scripts/services.sh up --stack test)\" first}"
: "${AMQP_URL:?}"

if ! command -v prometheus >/dev/null 2>&1; then
  log "installing Debian's prometheus"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq prometheus >/dev/null
  # The package may start a system instance; ours is private.
  service prometheus stop >/dev/null 2>&1 || true
fi
cargo build -q --bins

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); ops=$(free_port); wops=$(free_port); prom=$(free_port)
suffix="e2e_$$_$(date +%s)"
secret=e2e-gocardless-secret

export DATABASE_URL="${DATABASE_URL%/*}/payhook_test_$suffix"
export PAYHOOK_AMQP_PREFIX="t_$suffix"
export GOCARDLESS_WEBHOOK_SECRET=$secret
INGEST_ADDR=127.0.0.1:$port INGEST_OPS_ADDR=127.0.0.1:$ops target/debug/payhook-ingest >"$work/ingest.log" 2>&1 &
pids+=($!)
WORKER_OPS_ADDR=127.0.0.1:$wops target/debug/payhook-worker >"$work/worker.log" 2>&1 &
pids+=($!)

wait_for() { # url
  for _ in $(seq 1 120); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.5; done
  log "$1 never answered"; cat "$work"/*.log >&2; exit 1
}
wait_for "http://127.0.0.1:$ops/readyz"
wait_for "http://127.0.0.1:$wops/healthz"

body='{"events":[{"id":"EVe2e1","created_at":"2026-11-24T10:00:00.000Z","resource_type":"mandates","action":"created","links":{"mandate":"MDe2e1"},"metadata":{"name":"Test Member","email":"member@example.org"}}],"meta":{"webhook_id":"WBe2e1"}}'
sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$secret" -hex | sed 's/^.* //')
status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/webhooks/gocardless" \
  -H 'Content-Type: application/json' -H "Webhook-Signature: $sig" -d "$body")
[ "$status" = 204 ] || { log "the signed webhook got $status, not 204"; cat "$work"/*.log >&2; exit 1; }

cat >"$work/prometheus.yml" <<YML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: payhook-ingest
    static_configs: [{targets: ["127.0.0.1:$ops"]}]
  - job_name: payhook-worker
    static_configs: [{targets: ["127.0.0.1:$wops"]}]
YML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom" >"$work/prometheus.log" 2>&1 &
pids+=($!)

query='sum(payhook_webhook_requests_total{provider="gocardless",outcome="accepted"})'
value=""
for _ in $(seq 1 60); do
  value=$(curl -fsS "http://127.0.0.1:$prom/api/v1/query" --data-urlencode "query=$query" 2>/dev/null \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")' 2>/dev/null || true)
  [ -n "$value" ] && [ "${value%.*}" -gt 0 ] 2>/dev/null && break
  sleep 1
done
if [ -z "$value" ] || ! [ "${value%.*}" -gt 0 ] 2>/dev/null; then
  log "Prometheus never saw $query > 0"; cat "$work/prometheus.log" >&2; exit 1
fi
# A scrape times out after the 1 s interval: on a loaded machine one debug build may miss a
# scrape now and then, so wait (bounded) for both targets to answer the same round.
up=""
for _ in $(seq 1 30); do
  up=$(curl -fsS "http://127.0.0.1:$prom/api/v1/query" --data-urlencode 'query=sum(up)' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["result"][0]["value"][1])' 2>/dev/null || true)
  [ "$up" = 2 ] && break
  sleep 1
done
[ "$up" = 2 ] || { log "expected both targets up, got up=$up"; cat "$work/prometheus.log" >&2; exit 1; }
echo "ok    a real Prometheus scraped ingest and worker: $query = $value, up = $up"

curl -fsS "http://127.0.0.1:$ops/metrics" >"$work/ingest.metrics"
curl -fsS "http://127.0.0.1:$wops/metrics" >"$work/worker.metrics"
deploy/metric_names.sh --metrics "$work/ingest.metrics" --metrics "$work/worker.metrics"
psql "${DATABASE_URL%/*}/postgres" -qc "DROP DATABASE IF EXISTS \"payhook_test_$suffix\" WITH (FORCE)" >/dev/null 2>&1 || true
