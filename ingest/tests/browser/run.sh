#!/usr/bin/env bash
# The ops console in a real headless browser: installs Debian's chromium and the npm
# dependency (playwright-core) if missing, starts the test stack, builds and runs
# payhook-ingest on free ports with a fresh database, seeds a payment with a dead event and a
# pending bank-transfer payment with a bank credit whose mistyped reference the matching rule
# cannot place, and runs console.test.mjs against GET /admin/ (it also posts a signed
# GoCardless webhook that payhook cannot read). Exits non-zero when the test fails.
# Screenshot (a test artifact, not committed): target/console.png.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
root=$PWD
log() { printf '[browser] %s\n' "$*" >&2; }

if [ ! -x /usr/bin/chromium ]; then
  log "chromium missing; installing Debian's chromium"
  if [ "$(id -u)" != 0 ]; then log "installing needs root: sudo apt-get install -y chromium chromium-driver"; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq chromium chromium-driver >/dev/null
fi
if [ ! -d "$here/node_modules/playwright-core" ]; then
  log "installing playwright-core (npm ci)"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

eval "$(scripts/services.sh up --stack test)"
cargo build -q -p payhook-ingest
mkdir -p target

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
web_port=$(free_port)
ops_port=$(free_port)
suffix="$$_$(date +%s)"
db="payhook_browser_$suffix"
db_url="${DATABASE_URL%/*}/$db"
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
gocardless_secret=browser-test-secret
ingest_log="$root/target/browser-ingest.log"

ingest_pid=
cleanup() {
  if [ -n "$ingest_pid" ]; then kill "$ingest_pid" 2>/dev/null || true; wait "$ingest_pid" 2>/dev/null || true; fi
  psql "${DATABASE_URL%/*}/postgres" -qAtc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || true
}
trap cleanup EXIT

log "starting payhook-ingest (database $db, ops on 127.0.0.1:$ops_port)"
# The database is created by ingest itself on start (then migrated).
env -u GOCARDLESS_WEBHOOK_SECRET -u PAYSTACK_SECRET_KEY -u FLUTTERWAVE_SECRET_HASH -u PAYQI_WEBHOOK_SECRET \
  DATABASE_URL="$db_url" AMQP_URL="$AMQP_URL" PAYHOOK_AMQP_PREFIX="browser_$suffix" \
  INGEST_ADDR="127.0.0.1:$web_port" INGEST_OPS_ADDR="127.0.0.1:$ops_port" \
  PAYHOOK_ADMIN_TOKEN="$token" GOCARDLESS_WEBHOOK_SECRET="$gocardless_secret" \
  "$root/target/debug/payhook-ingest" >"$ingest_log" 2>&1 &
ingest_pid=$!
for _ in $(seq 1 120); do
  if curl -fsS "http://127.0.0.1:$ops_port/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$ingest_pid" 2>/dev/null; then log "ingest exited:"; cat "$ingest_log" >&2; exit 1; fi
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$ops_port/readyz" >/dev/null || { log "ingest not ready"; cat "$ingest_log" >&2; exit 1; }

# A member, her payment, its events (created: processed; confirmed: dead), and a few others
# so the counts by status have something to show.
dead_id=$(psql "$db_url" -qAt -v ON_ERROR_STOP=1 <<'SQL'
INSERT INTO members (mandate_id, name, email, joined_on) VALUES ('MD0001', 'Ada Lovelace', 'ada@example.org', '2026-11-01');
INSERT INTO payments (provider, external_id, reference, member_id, mandate_id, amount_minor, currency, status)
  SELECT 'gocardless', 'PM0001', 'REF-2026-0042', id, 'MD0001', 2750, 'GBP', 'pending' FROM members WHERE mandate_id = 'MD0001';
INSERT INTO webhook_events (provider, external_id, event_type, resource_id, payload, status, attempts, occurred_at, processed_at)
VALUES ('gocardless', 'EV0001', 'mandates.created', 'MD0001', '{"id":"EV0001"}', 'processed', 1, '2026-11-01 09:00Z', now()),
       ('gocardless', 'EV0002', 'payments.created', 'PM0001', '{"id":"EV0002"}', 'processed', 1, '2026-11-20 09:00Z', now()),
       ('paystack', 'charge.success:77', 'charge.success', 'ref-77', '{"event":"charge.success"}', 'retrying', 2, '2026-11-24 11:00Z', NULL),
       ('payqi', 'evt_9', 'payment.pending', 'pay_9', '{"id":"evt_9"}', 'received', 0, '2026-11-24 11:30Z', NULL);
INSERT INTO webhook_events (provider, external_id, event_type, resource_id, payload, status, attempts, last_error, occurred_at)
VALUES ('gocardless', 'EV0003', 'payments.confirmed', 'PM0001', '{"id":"EV0003"}', 'dead', 1,
        'GET /payments/PM0001: HTTP 404', '2026-11-24 10:00Z')
RETURNING id;
SQL
)
dead_id=$(printf '%s\n' "$dead_id" | grep -E '^[0-9]+$' | tail -n 1)

# A payment expected by bank transfer and the credit that pays it, whose remittance text
# names it with a typo ("inv bank 1" for INV-BANK-1): unmatched, for the console to match by
# hand. Same amount and currency, so the match is allowed.
bank_ids=$(psql "$db_url" -qAt -v ON_ERROR_STOP=1 <<'SQL'
INSERT INTO payments (provider, external_id, reference, amount_minor, currency, status)
VALUES ('bank', 'INV-BANK-1', 'INV-BANK-1', 4200, 'GBP', 'pending')
RETURNING id;
INSERT INTO bank_transactions (connection_id, transaction_id, booked_on, amount_minor, currency,
                               reference, counterparty, match_status)
VALUES ('CN1', 'TX-BROWSER-1', current_date, 4200, 'GBP', 'Payment for inv bank 1 typo', 'A Payer', 'unmatched')
RETURNING id;
SQL
)
bank_ids=$(printf '%s\n' "$bank_ids" | grep -E '^[0-9]+$' || true)
bank_payment_id=$(printf '%s\n' "$bank_ids" | sed -n 1p)
bank_credit_id=$(printf '%s\n' "$bank_ids" | sed -n 2p)
if [ -z "$bank_payment_id" ] || [ -z "$bank_credit_id" ]; then log "seeding the bank credit failed: $bank_ids"; exit 1; fi
log "seeded; dead event $dead_id, bank payment $bank_payment_id, bank credit $bank_credit_id"

status=0
CONSOLE_URL="http://127.0.0.1:$ops_port/admin/" ADMIN_TOKEN="$token" REFERENCE="REF-2026-0042" \
  DEAD_EVENT_ID="$dead_id" BANK_PAYMENT_ID="$bank_payment_id" BANK_CREDIT_ID="$bank_credit_id" \
  SCREENSHOT="$root/target/console.png" CHROMIUM=/usr/bin/chromium \
  WEBHOOK_URL="http://127.0.0.1:$web_port/webhooks/gocardless" GOCARDLESS_SECRET="$gocardless_secret" \
  node "$here/console.test.mjs" || status=$?
if [ "$status" != 0 ]; then log "ingest log: $ingest_log"; fi
exit "$status"
