#!/usr/bin/env bash
# The clustered loopback setup (scripts/cluster.sh, through scripts/services.sh --cluster) and its
# faults, end to end, in a few minutes:
#   - three RabbitMQ nodes form one cluster; a quorum queue declared with
#     x-quorum-initial-group-size 3 has a member on each;
#   - the PostgreSQL standby streams synchronously; a row written through the read-write
#     address is on the standby;
#   - kill -9 of the primary, promote, the read-write address moves: writes work again, and
#     every write acknowledged before the kill (a writer runs throughout) is on the new primary;
#     the old primary rejoins as a synchronous standby; then the same once more, back the other way;
#   - kill -9 of the node leading the quorum queue: a new leader; the node restarts and rejoins;
#   - down stops everything.
# Prints how long each recovery took. Runs the throwaway stack `cluster-test` (PostgreSQL
# 61435-61437, AMQP 61675-61677, distribution 41675-41677) in its own state directory, so it
# touches no other stack. Needs root or the postgres/rabbitmq tools runnable as this user
# (services.sh installs what is missing, as root).
#
#   scripts/tests/cluster.sh [--async]     --async: the same with asynchronous replication (the
#                                          acknowledged-writes check then only reports losses)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
services=$repo/scripts/services.sh
async=()
if [ "${1:-}" = --async ]; then async=(--async); fi
state=$(mktemp -d /var/tmp/payhook-clustertest.XXXXXX)
chmod 755 "$state"
export PAYHOOK_STATE_DIR=$state
stack=(--cluster --stack cluster-test)
psql=${PG_BIN:-/usr/lib/postgresql/15/bin}/psql
failures=0
writer_pid=

now_ms() { date +%s%3N; }
# A process that exists and is not a zombie (a killed one waits a moment for init to reap it).
alive() { [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }
ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
took() { echo "$(( $(now_ms) - $1 )) ms"; }
sv() { "$services" "$@" "${stack[@]}"; }

cleanup() {
  if [ -n "$writer_pid" ]; then kill "$writer_pid" 2>/dev/null || true; wait "$writer_pid" 2>/dev/null || true; fi
  timeout 60 "$services" down "${stack[@]}" >/dev/null 2>&1 || true
  pkill -9 -f "beam.smp .*-home $state/rabbit/[123]( |$)" 2>/dev/null || true
  if [ "${KEEP_CLUSTER_TEST_STATE:-0}" = 1 ]; then echo "state kept in $state"; else rm -rf "$state"; fi
}
trap cleanup EXIT

t=$(now_ms)
env_lines=$(sv up "${async[@]}" 2>"$state/up.log") || { cat "$state/up.log"; echo "cluster: up failed"; exit 1; }
echo "up --cluster: $(took "$t")"
echo "$env_lines"
eval "$env_lines"
rw_url=${DATABASE_URL%/payhook}/postgres
port_of() { sed -n "s/.*$1=127.0.0.1:\([0-9]*\).*/\1/p" <<<"$PAYHOOK_PG_NODES"; }
node_url() { echo "postgres://postgres@127.0.0.1:$(port_of "$1")/postgres"; }
q() { PGCONNECT_TIMEOUT=3 "$psql" "$1" -qAtX -v ON_ERROR_STOP=1 -c "$2"; }
primary() { sed -n 's/^PRIMARY=//p' "$state/roles"; }
standby() { sed -n 's/^STANDBY=//p' "$state/roles"; }
want_sync=sync
if [ ${#async[@]} -gt 0 ]; then want_sync=async; fi

# ---- RabbitMQ: one cluster, a quorum queue on all three --------------------------------------
cs=$("$repo/scripts/cluster.sh" rabbitmqctl 1 cluster_status --formatter json --stack cluster-test)
running=$(grep -o '"running_nodes":\[[^]]*\]' <<<"$cs" | grep -o 'payhook-cluster-test-[123]@localhost' | sort -u | wc -l)
disk=$(grep -o '"disk_nodes":\[[^]]*\]' <<<"$cs" | grep -o 'payhook-cluster-test-[123]@localhost' | sort -u | wc -l)
if [ "$running" = 3 ] && [ "$disk" = 3 ]; then ok "rabbitmqctl cluster_status: 3 disc nodes, 3 running"
else fail "rabbitmqctl cluster_status: $disk disc nodes, $running running (want 3 and 3)"; fi

queue=cluster-test.q
sv rabbit-declare-quorum "$queue" 3 >/dev/null
members=$(sv rabbit-quorum-status "$queue" 2>/dev/null)
if [ "$(awk '{print $1}' <<<"$members" | sort -u | wc -l)" = 3 ] && [ "$(grep -c ' leader$' <<<"$members")" = 1 ]; then
  ok "quorum queue $queue (x-quorum-initial-group-size 3): a member on each node, one leader"
else fail "quorum queue $queue members: $(tr '\n' ';' <<<"$members")"; fi

# ---- PostgreSQL: synchronous standby, a write through the read-write address reaches it -----
check_replication() { # LABEL: the standby streams with the wanted sync_state, as the primary sees it
  # From both ends: the primary's pg_stat_replication, and the standby's WAL receiver on the
  # primary's timeline (a standby left on the old timeline can look `streaming` for an instant).
  local row rcv tli
  row=$(q "$(node_url "$(primary)")" "SELECT state || ' ' || sync_state FROM pg_stat_replication WHERE application_name = 'pg_$(standby)'" || true)
  tli=$(q "$(node_url "$(primary)")" "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int" || true)
  rcv=$(q "$(node_url "$(standby)")" "SELECT status || ' ' || received_tli FROM pg_stat_wal_receiver" || true)
  if [ "$row" = "streaming $want_sync" ] && [ "$rcv" = "streaming $tli" ]; then
    ok "$1: standby $(standby) streams from $(primary) on timeline $tli, sync_state=$want_sync"
  else fail "$1: pg_stat_replication of standby $(standby) is '$row' (want 'streaming $want_sync'), its WAL receiver '$rcv' (primary timeline $tli)"; fi
}
check_replication "after up"
q "$rw_url" "CREATE TABLE cluster_test (id bigserial PRIMARY KEY, what text NOT NULL, at timestamptz NOT NULL DEFAULT now())" >/dev/null
id=$(q "$rw_url" "INSERT INTO cluster_test (what) VALUES ('through the read-write address') RETURNING id")
seen=
for _ in $(seq 1 50); do
  seen=$(q "$(node_url "$(standby)")" "SELECT count(*) FROM cluster_test WHERE id = $id" 2>/dev/null || true)
  [ "$seen" = 1 ] && break
  sleep 0.1
done
if [ "$seen" = 1 ]; then ok "a row written through the read-write address is on the standby ($(standby))"
else fail "row $id written through the read-write address is not on the standby"; fi

# A writer through the read-write address for the rest of the PostgreSQL part: each
# acknowledged insert's id goes to a file, and every one of them must survive the failovers.
acked=$state/acked
: >"$acked"
(
  while :; do
    if i=$(PGCONNECT_TIMEOUT=2 "$psql" "$rw_url" -qAtX -c "INSERT INTO cluster_test (what) VALUES ('writer') RETURNING id" 2>/dev/null); then
      echo "$i" >>"$acked"
    else
      sleep 0.05
    fi
  done
) &
writer_pid=$!
sleep 2

failover() { # LABEL
  local label=$1 t0 t_kill t_write old new
  old=$(primary); new=$(standby)
  t0=$(now_ms)
  echo "-- $label: kill -9 primary $old, promote $new"
  sv pg-kill-primary
  t_kill=$(now_ms)
  sv pg-promote
  echo "   promote done $(took "$t_kill") after the kill"
  # Writes through the read-write address work again.
  local w=
  for _ in $(seq 1 100); do
    w=$(q "$rw_url" "INSERT INTO cluster_test (what) VALUES ('after $label') RETURNING inet_server_port()" 2>/dev/null || true)
    [ -n "$w" ] && break
    sleep 0.1
  done
  t_write=$(now_ms)
  if [ "$w" = "$(port_of "$new")" ]; then ok "$label: a write through the read-write address lands on $new, $((t_write - t_kill)) ms after the kill"
  else fail "$label: no write through the read-write address reached $new (got '$w')"; fi
  echo "RECOVERY $label pg_write_after_kill_ms=$((t_write - t_kill))"
  # Every write acknowledged before the kill is on the new primary.
  local lost total
  sleep 1
  total=$(wc -l <"$acked")
  lost=$(comm -23 <(sort "$acked") <(q "$rw_url" "SELECT id FROM cluster_test" | sort))
  if [ -z "$lost" ]; then ok "$label: all $total acknowledged writes so far are on the new primary"
  elif [ "$want_sync" = async ]; then echo "info $label (async): $(wc -w <<<"$lost") of $total acknowledged writes LOST: $(tr '\n' ' ' <<<"$lost" | head -c 200)"
  else fail "$label: $(wc -w <<<"$lost") of $total acknowledged writes are missing on the new primary: $(tr '\n' ' ' <<<"$lost" | head -c 200)"; fi
  # The old primary back as the standby.
  local t_rj; t_rj=$(now_ms)
  local out; out=$(sv pg-rejoin-old-primary)
  echo "   $out"
  echo "RECOVERY $label pg_rejoin_ms=$(( $(now_ms) - t_rj )) method=$(sed -n 's/.*method=\([^ ]*\).*/\1/p' <<<"$out") total_ms=$(( $(now_ms) - t0 ))"
  if [ "$(primary)" = "$new" ] && [ "$(standby)" = "$old" ]; then ok "$label: roles recorded: primary $new, standby $old"
  else fail "$label: roles file says primary $(primary), standby $(standby)"; fi
  check_replication "$label, after rejoin"
}
failover "pg failover 1"
sleep 2
failover "pg failover 2 (back)"
kill "$writer_pid" 2>/dev/null || true; wait "$writer_pid" 2>/dev/null || true; writer_pid=
n_acked=$(wc -l <"$acked")
lost=$(comm -23 <(sort "$acked") <(q "$rw_url" "SELECT id FROM cluster_test" | sort) | wc -l)
if [ "$lost" = 0 ]; then ok "all $n_acked writes acknowledged during two failovers are there"
elif [ "$want_sync" = async ]; then echo "info (async): $lost of $n_acked acknowledged writes lost over two failovers"
else fail "$lost of $n_acked acknowledged writes lost"; fi
# The standby holds what the primary holds.
sleep 1
a=$(q "$(node_url "$(primary)")" "SELECT count(*) FROM cluster_test"); b=$(q "$(node_url "$(standby)")" "SELECT count(*) FROM cluster_test")
if [ "$a" = "$b" ]; then ok "primary and standby hold the same $a rows"; else fail "primary has $a rows, standby $b"; fi

# ---- RabbitMQ: kill -9 the quorum queue's leader, restart it --------------------------------
leader=$(sv rabbit-leader "$queue" 2>/dev/null)
echo "-- rabbit: kill -9 $leader (leader of $queue)"
t_kill=$(now_ms)
sv rabbit-kill "$leader"
new_leader=
for _ in $(seq 1 120); do
  new_leader=$(sv rabbit-leader "$queue" 2>/dev/null || true)
  [ -n "$new_leader" ] && [ "$new_leader" != "$leader" ] && break
  sleep 0.25
done
t_elect=$(now_ms)
if [ -n "$new_leader" ] && [ "$new_leader" != "$leader" ]; then ok "a new leader of $queue: $new_leader, $((t_elect - t_kill)) ms after the kill"
else fail "no new leader of $queue after killing $leader"; fi
echo "RECOVERY rabbit new_leader_after_kill_ms=$((t_elect - t_kill))"
t_rs=$(now_ms)
sv rabbit-restart "$leader"
echo "RECOVERY rabbit restart_and_rejoin_ms=$(( $(now_ms) - t_rs ))"
cs=$("$repo/scripts/cluster.sh" rabbitmqctl "$leader" cluster_status --formatter json --stack cluster-test)
running=$(grep -o '"running_nodes":\[[^]]*\]' <<<"$cs" | grep -o 'payhook-cluster-test-[123]@localhost' | sort -u | wc -l)
if [ "$running" = 3 ]; then ok "$leader is back: cluster_status shows 3 running nodes"; else fail "after the restart $running nodes run"; fi
members=$(sv rabbit-quorum-status "$queue" 2>/dev/null)
if grep -q "^$leader " <<<"$members" && [ "$(wc -l <<<"$members")" = 3 ]; then ok "$leader is a member of $queue again ($(grep "^$leader " <<<"$members" | cut -d' ' -f2))"
else fail "members of $queue after the restart: $(tr '\n' ';' <<<"$members")"; fi

# ---- down ---------------------------------------------------------------------------------------
t=$(now_ms)
timeout 60 "$services" down "${stack[@]}"
d=$(( $(now_ms) - t ))
left=$(pgrep -f "beam.smp .*-home $state/rabbit/[123]( |$)" || true)
for n in a b; do
  pid=$(head -n1 "$state/pg/$n/postmaster.pid" 2>/dev/null || true)
  if alive "$pid"; then left="$left postgres:$pid"; fi
done
hp=$(cat "$state/haproxy/pid" 2>/dev/null || true)
if alive "$hp"; then left="$left haproxy:$hp"; fi
if [ -z "$left" ] && [ "$d" -lt 30000 ]; then ok "down --cluster stopped everything in $d ms"
else fail "down --cluster took $d ms, left: $left"; fi

if [ "$failures" -gt 0 ]; then
  echo "cluster: $failures failed"
  exit 1
fi
echo "cluster: all passed"
