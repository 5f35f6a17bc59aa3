#!/usr/bin/env bash
# The clustered loopback setup of DESIGN.md's "Scale-out": a three-node RabbitMQ cluster and a
# PostgreSQL primary with a streaming standby (synchronous unless --async), behind one
# read-write address (HAProxy) that a failover moves, standing for the Kubernetes Service.
# scripts/services.sh dispatches here when given --cluster (and for the fault commands below),
# so both spellings work: `scripts/services.sh up --cluster` and `scripts/cluster.sh up`.
#
#   up     [--stack NAME] [--async]   install what is missing, start everything, print env
#                                     (synchronous replication unless --async; each `up` sets it)
#   down   [--stack NAME]             stop everything, within seconds, in any state
#   env    [--stack NAME]             print the export lines
#   status [--stack NAME]             roles, replication, read-write target, RabbitMQ members
#
# Faults (for scripts/chaos --cluster; each prints one `key=value ...` line on stdout with
# at=<unix ms when it finished> and ms=<how long it took>; progress goes to stderr):
#   rabbit-leader QUEUE [VHOST]       the node that leads quorum queue QUEUE (stdout: the name)
#   rabbit-kill NODE                  kill -9 that node's Erlang VM (NODE: 1|2|3 or its name)
#   rabbit-restart NODE               start it again; returns once it runs in the cluster
#   pg-kill-primary                   kill -9 the primary's postmaster
#   pg-promote                        pg_ctl promote the standby, move the read-write address
#                                     to it (a still-running old primary is stopped first)
#   pg-rejoin-old-primary             the old primary back as the new standby (pg_rewind, else
#                                     a fresh pg_basebackup); synchronous again in the mode
#                                     `up` set (sync unless `up --async`)
# Helpers: reset-rabbit (empties the cluster: vhost / deleted and made again),
#   rabbit-quorum-status QUEUE [VHOST] (one `node raft_state` line per member),
#   rabbit-declare-quorum QUEUE [GROUP_SIZE] (a durable quorum queue, through rabbitmqctl),
#   rabbitmqctl|rabbitmq-queues NODE ARGS... (that tool against node NODE, e.g.
#   `scripts/cluster.sh rabbitmqctl 1 cluster_status`).
#
# Stacks (ports are consecutive: PostgreSQL node a, node b, read-write address; AMQP and
# Erlang distribution of RabbitMQ nodes 1, 2, 3):
#   cluster       PostgreSQL 61432 61433 rw 61434   AMQP 61672-61674   distribution 41672-41674
#   cluster-test  PostgreSQL 61435 61436 rw 61437   AMQP 61675-61677   distribution 41675-41677
# Any other name needs PAYHOOK_CLUSTER_PG_PORT, PAYHOOK_CLUSTER_AMQP_PORT and
# PAYHOOK_CLUSTER_DIST_PORT (the first of three each). The rabbitmqctl/rabbitmq-queues
# pass-through listens on 41678-41679 (PAYHOOK_CLUSTER_CLI_DIST_PORT), the script's own calls on none.
# State: PAYHOOK_STATE_DIR, else .payhook/<stack> (as services.sh). $state/roles records which
# PostgreSQL node is primary, the standby's state and the replication mode, so faults can be
# repeated in either direction.
set -euo pipefail

cmd=${1:-up}
shift || true
stack=cluster
mode=sync
args=()
mode_given=
while [ $# -gt 0 ]; do
  case "$1" in
    --stack) stack=$2; shift 2 ;;
    --cluster) shift ;;
    --async) mode=async; mode_given=1; shift ;;
    -*) if [ "$cmd" = rabbitmqctl ] || [ "$cmd" = rabbitmq-queues ]; then args+=("$1"); shift; continue; fi
        echo "unknown argument: $1" >&2; exit 2 ;;
    *) args+=("$1"); shift ;;
  esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
case "$stack" in
  cluster)      pg_base=61432; amqp_base=61672; dist_base=41672 ;;
  cluster-test) pg_base=61435; amqp_base=61675; dist_base=41675 ;;
  *)
    if [ -z "${PAYHOOK_CLUSTER_PG_PORT:-}" ] || [ -z "${PAYHOOK_CLUSTER_AMQP_PORT:-}" ] || [ -z "${PAYHOOK_CLUSTER_DIST_PORT:-}" ]; then
      echo "unknown cluster stack: $stack (cluster or cluster-test; any other name needs PAYHOOK_CLUSTER_PG_PORT, PAYHOOK_CLUSTER_AMQP_PORT and PAYHOOK_CLUSTER_DIST_PORT)" >&2
      exit 2
    fi ;;
esac
pg_base=${PAYHOOK_CLUSTER_PG_PORT:-$pg_base}
amqp_base=${PAYHOOK_CLUSTER_AMQP_PORT:-$amqp_base}
dist_base=${PAYHOOK_CLUSTER_DIST_PORT:-$dist_base}
rw_port=$((pg_base + 2))
# Listening ports for the pass-through CLI tools (see cli_listen).
dist_cli_base=${PAYHOOK_CLUSTER_CLI_DIST_PORT:-41678}

state=${PAYHOOK_STATE_DIR:-$repo/.payhook/$stack}
# As root, the data must be reachable by the postgres and rabbitmq users (as in services.sh).
if [ -z "${PAYHOOK_STATE_DIR:-}" ] && [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 \
  && ! setpriv --reuid=postgres --regid=postgres --init-groups test -x "$repo" 2>/dev/null; then
  state=/var/tmp/payhook-$(printf '%s' "$repo" | cksum | cut -d' ' -f1)/$stack
fi
pg_bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
pg_root=$state/pg            # data dirs a/ and b/, their logs, the sockets
roles=$state/roles
hap_dir=$state/haproxy
rmq_root=$state/rabbit
rmq_bin=/usr/lib/rabbitmq/bin

now_ms() { date +%s%3N; }
log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S.%3N)" "$*" >&2; }
die() { log "$*"; exit 1; }
# One result line on stdout: what was done, when it finished and how long it took.
report() { local start=$1; shift; local end; end=$(now_ms); echo "$* at=$end ms=$((end - start))"; }

# ---- users (initdb and postgres refuse root; RabbitMQ should not run as root) ---------------
as_user() {
  local user=$1; shift
  (
    cd /
    if [ "$(id -u)" != 0 ]; then "$@"
    elif command -v setpriv >/dev/null 2>&1; then
      setpriv --reuid="$user" --regid="$user" --init-groups env HOME="$(getent passwd "$user" | cut -d: -f6)" "$@"
    else runuser -u "$user" -- "$@"; fi
  )
}
pg_user() { if [ "$(id -u)" = 0 ]; then echo postgres; else id -un; fi; }
rmq_user() { if [ "$(id -u)" = 0 ]; then echo rabbitmq; else id -un; fi; }
own() { if [ "$(id -u)" = 0 ]; then chown -R "$1" "${@:2}"; fi; }

# True while a process (not a zombie) with this pid exists.
alive() { [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# ---- install what is missing ----------------------------------------------------------------
need_root() {
  if [ "$(id -u)" != 0 ]; then
    log "$1 is missing and installing it needs root: sudo apt-get install -y $1"
    exit 1
  fi
}
apt_updated=
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$apt_updated" ]; then apt-get update -qq >/dev/null; apt_updated=1; fi
  apt-get install -y -qq "$@" >/dev/null
  # Debian's packages start their own system services where they can; ours are private.
  if command -v service >/dev/null 2>&1; then
    service rabbitmq-server stop >/dev/null 2>&1 || true
    service haproxy stop >/dev/null 2>&1 || true
  fi
}
install_missing() {
  local want=()
  [ -x "$pg_bin/initdb" ] && [ -x "$pg_bin/pg_rewind" ] || want+=(postgresql-15)
  [ -x "$rmq_bin/rabbitmq-server" ] || want+=(rabbitmq-server)
  command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || want+=(haproxy)
  if [ ${#want[@]} -gt 0 ]; then
    log "installing ${want[*]} (Debian packages)"
    need_root "${want[*]}"
    apt_install "${want[@]}"
  fi
}
haproxy_bin() { command -v haproxy 2>/dev/null || echo /usr/sbin/haproxy; }

# ---- roles ------------------------------------------------------------------------------------
# PRIMARY=a|b  STANDBY=b|a  STANDBY_STATE=streaming|down  MODE=sync|async
PRIMARY=a; STANDBY=b; STANDBY_STATE=down; MODE=sync
read_roles() { if [ -f "$roles" ]; then . "$roles"; fi; }
write_roles() {
  printf 'PRIMARY=%s\nSTANDBY=%s\nSTANDBY_STATE=%s\nMODE=%s\n' "$PRIMARY" "$STANDBY" "$STANDBY_STATE" "$MODE" >"$roles.tmp"
  mv "$roles.tmp" "$roles"
}
read_roles
# --async on a fault command (pg-rejoin-old-primary) leaves the standby asynchronous.
if [ -n "$mode_given" ]; then MODE=$mode; fi

# ---- PostgreSQL -------------------------------------------------------------------------------
pg_port() { if [ "$1" = a ]; then echo "$pg_base"; else echo $((pg_base + 1)); fi; }
pg_dir() { echo "$pg_root/$1"; }
app_name() { echo "pg_$1"; }
other() { if [ "$1" = a ]; then echo b; else echo a; fi; }
psql_at() { # NODE SQL: one query as postgres over TCP, unaligned tuples
  PGCONNECT_TIMEOUT=3 "$pg_bin/psql" -h 127.0.0.1 -p "$(pg_port "$1")" -U postgres -d postgres -qAtX -v ON_ERROR_STOP=1 -c "$2"
}
psql_rw() { PGCONNECT_TIMEOUT=3 "$pg_bin/psql" -h 127.0.0.1 -p "$rw_port" -U postgres -d postgres -qAtX -v ON_ERROR_STOP=1 -c "$1"; }
postmaster_pid() {
  local f
  f=$(pg_dir "$1")/postmaster.pid
  [ -f "$f" ] || return 0
  local pid; pid=$(head -n1 "$f" | tr -dc 0-9)
  if alive "$pid"; then echo "$pid"; fi
}
pg_running() { [ -n "$(postmaster_pid "$1")" ]; }
pg_accepting() { "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$(pg_port "$1")" -t 2; }
in_recovery() { [ "$(psql_at "$1" 'SELECT pg_is_in_recovery()' 2>/dev/null)" = t ]; }

# After a kill -9 of the postmaster its backends exit on their own, a moment later, and the
# dead postmaster stays a zombie until init reaps it (about a second here). A new postmaster
# (or pg_rewind's single-user recovery) refuses to start before: kill(pid, 0) on a zombie
# succeeds, and the old backends would still hold the old shared memory.
wait_backends_gone() {
  local n=$1 dir f pid p busy
  dir=$(pg_dir "$n"); f=$dir/postmaster.pid
  pid=$(head -n1 "$f" 2>/dev/null | tr -dc 0-9 || true)
  for _ in $(seq 1 100); do
    busy=
    for p in /proc/[0-9]*; do
      if [ "$(readlink "$p/cwd" 2>/dev/null)" = "$dir" ] && alive "${p#/proc/}"; then busy=1; break; fi
    done
    if [ -z "$busy" ] && { [ -z "$pid" ] || [ ! -e "/proc/$pid" ]; }; then return 0; fi
    sleep 0.1
  done
  if [ -z "$busy" ] && [ -n "$pid" ] && ! alive "$pid"; then
    log "the killed postmaster $pid of node $n is still an unreaped zombie: removing its stale postmaster.pid"
    rm -f "$f"
    return 0
  fi
  log "processes of the killed PostgreSQL node $n are still running after 10 s"
}

pg_start() {
  local n=$1 dir; dir=$(pg_dir "$n")
  if pg_running "$n"; then return 0; fi
  wait_backends_gone "$n"
  as_user "$(pg_user)" "$pg_bin/pg_ctl" -D "$dir" -o "-p $(pg_port "$n") -k $pg_root" -l "$pg_root/$n.log" -w -t 120 start >/dev/null \
    || { tail -n 20 "$pg_root/$n.log" >&2; die "PostgreSQL node $n did not start (log: $pg_root/$n.log)"; }
}

pg_stop() {
  local n=$1 dir; dir=$(pg_dir "$n")
  [ -d "$dir" ] || return 0
  pg_running "$n" || return 0
  as_user "$(pg_user)" "$pg_bin/pg_ctl" -D "$dir" -m fast -w -t 8 stop >/dev/null 2>&1 \
    || as_user "$(pg_user)" "$pg_bin/pg_ctl" -D "$dir" -m immediate -w -t 4 stop >/dev/null 2>&1 || true
  local pid; pid=$(postmaster_pid "$n")
  if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
}

# Replaces (or adds) one setting in a stopped node's postgresql.auto.conf, keeping its owner.
set_auto_conf() {
  local f; f=$(pg_dir "$1")/postgresql.auto.conf
  { grep -v "^[[:space:]]*$2[[:space:]]*=" "$f" 2>/dev/null || true; echo "$2 = '$3'"; } >"$f.new"
  cat "$f.new" >"$f"
  rm -f "$f.new"
}

# A stopped node's data made into a standby of the current primary.
make_standby_conf() {
  local n=$1 p=$2 dir; dir=$(pg_dir "$1")
  set_auto_conf "$n" primary_conninfo "host=127.0.0.1 port=$(pg_port "$p") user=postgres application_name=$(app_name "$n") connect_timeout=2"
  set_auto_conf "$n" synchronous_standby_names ""
  as_user "$(pg_user)" touch "$dir/standby.signal"
  own "$(pg_user)" "$dir"
}

pg_init_primary() {
  local n=$1 dir; dir=$(pg_dir "$1")
  log "initdb $dir"
  mkdir -p "$dir"
  chmod 700 "$dir"
  own "$(pg_user)" "$pg_root"
  as_user "$(pg_user)" "$pg_bin/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 >/dev/null
  # Node-specific settings (port, socket directory) are given at start, so the configuration
  # that pg_basebackup and pg_rewind copy from node to node fits both.
  cat >>"$dir/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
max_connections = 400
shared_buffers = 256MB
fsync = on
synchronous_commit = on
logging_collector = off
wal_level = replica
max_wal_senders = 10
wal_keep_size = 1GB
wal_log_hints = on
hot_standby = on
wal_receiver_status_interval = 1s
wal_retrieve_retry_interval = 1s
EOF
  # initdb's pg_hba.conf already lets 127.0.0.1 replicate (trust), which the standby needs.
}

# Fresh standby data from the running primary (pg_basebackup), configured and not started.
pg_basebackup_to() {
  local n=$1 p=$2 dir; dir=$(pg_dir "$1")
  log "pg_basebackup from $p ($(pg_port "$p")) into $dir"
  # Into a side directory first: a backup cut short must not look like a node's data.
  rm -rf "$dir" "$dir.partial"
  mkdir -p "$dir.partial"; chmod 700 "$dir.partial"; own "$(pg_user)" "$dir.partial"
  as_user "$(pg_user)" "$pg_bin/pg_basebackup" -h 127.0.0.1 -p "$(pg_port "$p")" -U postgres -D "$dir.partial" \
    -X stream -c fast >"$pg_root/$n.basebackup.log" 2>&1 \
    || { cat "$pg_root/$n.basebackup.log" >&2; die "pg_basebackup into $dir.partial failed"; }
  mv "$dir.partial" "$dir"
  make_standby_conf "$n" "$p"
}

# The timeline the primary writes on.
pg_timeline() { psql_at "$1" "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"; }

# Waits until standby N really follows primary P: its WAL receiver streams on P's current
# timeline, P lists it as streaming (with want=sync: as sync), and that holds for three checks
# in a row. One sample of pg_stat_replication is not enough: a node that was not rewound (or
# not far enough) connects, shows as `streaming` for an instant, fails and retries every
# second; while it shows, a primary that names it in synchronous_standby_names takes the
# flush position it reports, on its OWN timeline, as confirmation of commits it never got.
wait_streaming() {
  local p=$1 n=$2 want=$3 secs=${4:-60} row= rcv= tli good=0
  for _ in $(seq 1 $((secs * 4))); do
    tli=$(pg_timeline "$p" 2>/dev/null || true)
    rcv=$(psql_at "$n" "SELECT status || ' ' || received_tli FROM pg_stat_wal_receiver" 2>/dev/null | head -n1 || true)
    row=$(psql_at "$p" "SELECT state || ' ' || sync_state FROM pg_stat_replication WHERE application_name = '$(app_name "$n")'" 2>/dev/null | head -n1 || true)
    local fine=
    if [ -n "$tli" ] && [ "$rcv" = "streaming $tli" ]; then
      case "$want" in
        sync) [ "$row" = "streaming sync" ] && fine=1 ;;
        *) case "$row" in streaming*) fine=1 ;; esac ;;
      esac
    fi
    if [ -n "$fine" ]; then good=$((good + 1)); [ "$good" -ge 3 ] && return 0; else good=0; fi
    sleep 0.25
  done
  log "standby $n does not follow $p ($want) after ${secs}s: its WAL receiver '${rcv}' (primary timeline ${tli:-?}), pg_stat_replication '${row}'"
  return 1
}

# The replication mode on the primary: the standby's name in synchronous_standby_names, or none.
apply_mode() {
  local p=$1 n=$2 names=
  if [ "$MODE" = sync ] && [ -n "$n" ]; then names=$(app_name "$n"); fi
  psql_at "$p" "ALTER SYSTEM SET synchronous_standby_names = '$names'" >/dev/null
  psql_at "$p" "SELECT pg_reload_conf()" >/dev/null
}

# ---- the read-write address (HAProxy, TCP) ----------------------------------------------------
hap_pid() { local pid; pid=$(tr -dc 0-9 2>/dev/null <"$hap_dir/pid" || true); if alive "$pid"; then echo "$pid"; fi; }
# Points the address at node N: a new configuration and a reload that ends the old process at
# once (-st), so connections to the old primary are cut, as a moving Service cuts them.
hap_point() {
  local n=$1 port; port=$(pg_port "$1")
  mkdir -p "$hap_dir"
  cat >"$hap_dir/haproxy.cfg.new" <<EOF
# Written by scripts/cluster.sh: the read-write address of stack $stack -> PostgreSQL node $n.
global
  maxconn 4000
defaults
  mode tcp
  timeout connect 2s
  timeout client 1h
  timeout server 1h
  option tcpka
frontend pg_rw
  bind 127.0.0.1:$rw_port
  default_backend pg_primary
backend pg_primary
  server pg_$n 127.0.0.1:$port
EOF
  mv "$hap_dir/haproxy.cfg.new" "$hap_dir/haproxy.cfg"
  echo "$n" >"$hap_dir/target"
  local old; old=$(hap_pid)
  ulimit -n 16384 2>/dev/null || true
  if [ -n "$old" ]; then
    "$(haproxy_bin)" -q -D -f "$hap_dir/haproxy.cfg" -p "$hap_dir/pid" -st "$old"
  else
    "$(haproxy_bin)" -q -D -f "$hap_dir/haproxy.cfg" -p "$hap_dir/pid"
  fi
  for _ in $(seq 1 50); do [ -n "$(hap_pid)" ] && return 0; sleep 0.1; done
  die "HAProxy did not start ($hap_dir/haproxy.cfg)"
}
hap_target() { cat "$hap_dir/target" 2>/dev/null || echo none; }
hap_stop() {
  local pid; pid=$(hap_pid)
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do alive "$pid" || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

# ---- RabbitMQ ---------------------------------------------------------------------------------
rnode() { echo "payhook-$stack-$1@localhost"; }
rbase() { echo "$rmq_root/$1"; }
# A node given as 1|2|3, payhook-<stack>-N or payhook-<stack>-N@localhost.
node_index() {
  case "$1" in
    1|2|3) echo "$1" ;;
    "payhook-$stack-"[123]|"payhook-$stack-"[123]@localhost) local s=${1%@localhost}; echo "${s##*-}" ;;
    *) die "unknown RabbitMQ node: $1 (1, 2, 3 or $(rnode 1) ...)" ;;
  esac
}
# The command line that runs a RabbitMQ program against node N (under as_user, through env).
rmq_env() {
  local i=$1 b; b=$(rbase "$1"); shift
  rmq_cmd=(env RABBITMQ_NODENAME="$(rnode "$i")" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    RABBITMQ_NODE_PORT=$((amqp_base + i - 1)) RABBITMQ_DIST_PORT=$((dist_base + i - 1))
    RABBITMQ_MNESIA_BASE="$b/mnesia" RABBITMQ_LOG_BASE="$b/log" RABBITMQ_CONFIG_FILE="$b/rabbitmq"
    RABBITMQ_ENABLED_PLUGINS_FILE="$b/enabled_plugins" RABBITMQ_PID_FILE="$b/pid"
    # Distribution on loopback only.
    "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}"
    "${cli_dist[@]}"
    HOME="$b" "$@")
}
# The CLI tools are Erlang nodes too. This script's own calls each talk to one node, so they
# open no port (-dist_listen false) and any number can run at once (down stops three nodes
# side by side). Commands that gather from every node (list_queues, ...) need the other nodes
# to connect back to the CLI: the rabbitmqctl/rabbitmq-queues pass-through listens, on the two
# ports left after both stacks' distribution ports (so at most two of those at a time).
cli_dist=("RABBITMQ_CTL_ERL_ARGS=-dist_listen false")
cli_listen() { cli_dist=(RABBITMQ_CTL_DIST_PORT_MIN=$((dist_cli_base)) RABBITMQ_CTL_DIST_PORT_MAX=$((dist_cli_base + 1))); }
rctl() { # N ARGS...: rabbitmqctl against node N
  local i=$1; shift
  rmq_env "$i" timeout 60 "$rmq_bin/rabbitmqctl" -n "$(rnode "$i")" -q "$@"
  as_user "$(rmq_user)" "${rmq_cmd[@]}"
}
rqueues() {
  local i=$1; shift
  rmq_env "$i" timeout 30 "$rmq_bin/rabbitmq-queues" -n "$(rnode "$i")" -q "$@"
  as_user "$(rmq_user)" "${rmq_cmd[@]}"
}
rabbit_pid() {
  local b pid=""; b=$(rbase "$1")
  [ -f "$b/pid" ] && pid=$(tr -dc 0-9 <"$b/pid")
  if alive "$pid"; then echo "$pid"; return; fi
  pgrep -f "beam.smp .*-home $b( |$)" | head -n1 || true
}
rabbit_booted() { rctl "$1" await_startup --timeout 5 >/dev/null 2>&1; }
# The cluster members node N knows of (all) or sees running (running), one per line.
rabbit_members() {
  rctl "$1" eval "rabbit_mnesia:cluster_nodes($2)." 2>/dev/null | grep -o "payhook-$stack-[123]@localhost" || true
}

rabbit_prepare() {
  local i=$1 b; b=$(rbase "$1")
  mkdir -p "$b/mnesia" "$b/log"
  [ -f "$b/rabbitmq.conf" ] || cat >"$b/rabbitmq.conf" <<EOF
loopback_users.guest = true
listeners.tcp.default = 127.0.0.1:$((amqp_base + i - 1))
disk_free_limit.absolute = 10MB
cluster_partition_handling = pause_minority
log.console = false
log.file.level = warning
EOF
  [ -f "$b/enabled_plugins" ] || echo '[].' >"$b/enabled_plugins"
  # One Erlang cookie for the three nodes (and the CLI tools, which read it from HOME).
  if [ ! -f "$rmq_root/cookie" ]; then
    head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$rmq_root/cookie"
    chmod 400 "$rmq_root/cookie"
  fi
  if ! cmp -s "$rmq_root/cookie" "$b/.erlang.cookie"; then
    rm -f "$b/.erlang.cookie"; cp "$rmq_root/cookie" "$b/.erlang.cookie"; chmod 400 "$b/.erlang.cookie"
  fi
  own "$(rmq_user)" "$rmq_root"
}

rabbit_launch() {
  local i=$1
  rabbit_prepare "$i"
  if [ -n "$(rabbit_pid "$i")" ]; then return 0; fi
  log "starting RabbitMQ $(rnode "$i") on 127.0.0.1:$((amqp_base + i - 1))"
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  rmq_env "$i" "$rmq_bin/rabbitmq-server" -detached
  as_user "$(rmq_user)" "${rmq_cmd[@]}" >/dev/null 2>&1
}

rabbit_await() {
  local i=$1 secs=${2:-180}
  for _ in $(seq 1 "$secs"); do
    if rabbit_booted "$i"; then return 0; fi
    if [ -z "$(rabbit_pid "$i")" ]; then sleep 1; [ -n "$(rabbit_pid "$i")" ] || break; fi
    sleep 1
  done
  log "RabbitMQ $(rnode "$i") did not start; its log: $(rbase "$i")/log"
  tail -n 30 "$(rbase "$i")/log/"*.log >&2 2>/dev/null || true
  return 1
}

rabbit_join() {
  local i=$1
  if rabbit_members 1 all | grep -qx "$(rnode "$i")"; then return 0; fi
  log "$(rnode "$i"): join_cluster $(rnode 1)"
  # (3.10's join prints harmless warnings about feature flags and tracking tables: kept in a log.)
  local step
  for step in stop_app reset "join_cluster $(rnode 1)" start_app; do
    # shellcheck disable=SC2086
    rctl "$i" $step >>"$(rbase "$i")/log/join.log" 2>&1 || { tail -n 20 "$(rbase "$i")/log/join.log" >&2; die "$(rnode "$i"): $step failed"; }
  done
}

rabbit_stop() {
  local i=$1 pid; pid=$(rabbit_pid "$1")
  if [ -z "$pid" ]; then rm -f "$(rbase "$i")/pid"; return 0; fi
  # A graceful stop, bounded: a half-started node may not answer it; down must stay quick.
  rmq_env "$i" timeout 8 "$rmq_bin/rabbitmqctl" -n "$(rnode "$i")" -q stop
  as_user "$(rmq_user)" "${rmq_cmd[@]}" >/dev/null 2>&1 || true
  for _ in $(seq 1 8); do alive "$pid" || break; sleep 0.25; done
  if alive "$pid"; then log "RabbitMQ $(rnode "$i") did not stop; killing it"; kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$(rbase "$i")/pid"
}

# A node of the cluster that answers, for cluster-wide queries.
rabbit_any() {
  local i
  for i in "$@" 1 2 3; do
    if [ -n "$(rabbit_pid "$i")" ] && rabbit_booted "$i"; then echo "$i"; return 0; fi
  done
  return 1
}

quorum_status() { # QUEUE VHOST: `node raft_state` per member, asked of any running node
  # (exit 2: the queue does not exist)
  local q=$1 vh=$2 i out
  for i in 1 2 3; do
    [ -n "$(rabbit_pid "$i")" ] || continue
    if ! out=$(rqueues "$i" quorum_status --vhost "$vh" "$q" --formatter json 2>&1); then
      if printf '%s' "$out" | grep -qx 'not_found'; then return 2; fi
      continue
    fi
    printf '%s\n' "$out" | sed -n 's/.*"Node Name":"\([^"]*\)","Raft State":"\([^"]*\)".*/\1 \2/p'
    return 0
  done
  return 1
}

# ---- commands -----------------------------------------------------------------------------------
amqp_url() {
  local i urls=()
  for i in 1 2 3; do urls+=("amqp://guest:guest@127.0.0.1:$((amqp_base + i - 1))/%2f"); done
  (IFS=,; echo "${urls[*]}")
}
print_env() {
  echo "export DATABASE_URL=postgres://postgres@127.0.0.1:$rw_port/payhook"
  echo "export AMQP_URL=$(amqp_url)"
  echo "export PAYHOOK_CLUSTER_STATE=$state"
  echo "export PAYHOOK_PG_NODES=a=127.0.0.1:$(pg_port a),b=127.0.0.1:$(pg_port b)"
  echo "export PAYHOOK_RABBIT_NODES=$(rnode 1),$(rnode 2),$(rnode 3)"
}

pg_cluster_up() {
  mkdir -p "$pg_root"
  own "$(pg_user)" "$pg_root"
  if [ ! -s "$(pg_dir a)/PG_VERSION" ] && [ ! -s "$(pg_dir b)/PG_VERSION" ]; then
    PRIMARY=a; STANDBY=b; STANDBY_STATE=down
    pg_init_primary a
    write_roles
  fi
  log "PostgreSQL primary: node $PRIMARY on 127.0.0.1:$(pg_port "$PRIMARY")"
  pg_start "$PRIMARY"
  in_recovery "$PRIMARY" && die "node $PRIMARY is recorded as primary but is in recovery; see $roles"
  hap_point "$PRIMARY"
  if [ ! -s "$(pg_dir "$STANDBY")/PG_VERSION" ]; then
    pg_basebackup_to "$STANDBY" "$PRIMARY"
    pg_start "$STANDBY"
  elif [ "$STANDBY_STATE" = down ] && ! pg_running "$STANDBY"; then
    rejoin
    return
  else
    pg_start "$STANDBY"
  fi
  wait_streaming "$PRIMARY" "$STANDBY" any 120 || die "the standby does not stream; logs in $pg_root"
  apply_mode "$PRIMARY" "$STANDBY"
  if [ "$MODE" = sync ]; then wait_streaming "$PRIMARY" "$STANDBY" sync 60 || die "the standby is not synchronous"; fi
  STANDBY_STATE=streaming
  write_roles
  log "PostgreSQL standby: node $STANDBY on 127.0.0.1:$(pg_port "$STANDBY"), $MODE; read-write address 127.0.0.1:$rw_port"
}

rabbit_cluster_up() {
  mkdir -p "$rmq_root"
  local i fresh=()
  for i in 1 2 3; do [ -d "$(rbase "$i")/mnesia/$(rnode "$i")" ] || fresh+=("$i"); done
  if [ ${#fresh[@]} = 3 ]; then
    # A new cluster: node 1 first; 2 and 3 join it.
    rabbit_launch 1; rabbit_await 1 || exit 1
    rabbit_launch 2; rabbit_launch 3
    rabbit_await 2 || exit 1; rabbit_await 3 || exit 1
  else
    # An existing cluster: all at once, as each waits for the others' tables at boot.
    for i in 1 2 3; do rabbit_launch "$i"; done
    for i in 1 2 3; do rabbit_await "$i" || exit 1; done
  fi
  for i in 2 3; do rabbit_join "$i"; done
  local running; running=$(rabbit_members 1 running | wc -l)
  [ "$running" = 3 ] || die "the RabbitMQ cluster runs $running of 3 nodes"
  log "RabbitMQ cluster: $(rnode 1) $(rnode 2) $(rnode 3) (AMQP $amqp_base-$((amqp_base + 2)))"
}

cluster_up() {
  install_missing
  mkdir -p "$state"
  MODE=$mode
  # The two halves are independent: bring them up side by side.
  local rlog=$state/rabbit-up.log rc=0
  mkdir -p "$rmq_root"
  ( rabbit_cluster_up ) 2>"$rlog" &
  local rpid=$!
  pg_cluster_up
  wait "$rpid" || rc=$?
  cat "$rlog" >&2
  [ "$rc" = 0 ] || die "RabbitMQ did not come up"
  print_env
}

cluster_down() {
  local i
  hap_stop &
  for n in a b; do pg_stop "$n" & done
  for i in 1 2 3; do rabbit_stop "$i" & done
  wait
}

status() {
  read_roles
  local n
  echo "stack=$stack state=$state mode=$MODE rw=127.0.0.1:$rw_port rw_target=$(hap_target) haproxy=$([ -n "$(hap_pid)" ] && echo running || echo stopped)"
  for n in a b; do
    local role=standby run=state=stopped rec=
    [ "$n" = "$PRIMARY" ] && role=primary
    if pg_running "$n"; then
      run=state=running
      rec=$(psql_at "$n" 'SELECT CASE WHEN pg_is_in_recovery() THEN 1 ELSE 0 END' 2>/dev/null || echo '?')
      case "$rec" in 1) rec=in_recovery=yes ;; 0) rec=in_recovery=no ;; *) rec=in_recovery=unknown ;; esac
    fi
    echo "pg node=$n port=$(pg_port "$n") role=$role $run $rec"
  done
  if pg_running "$PRIMARY"; then
    psql_at "$PRIMARY" "SELECT 'pg replication application_name=' || application_name || ' state=' || state || ' sync_state=' || sync_state || ' replay_lag=' || coalesce(replay_lag::text, '0') FROM pg_stat_replication" 2>/dev/null || true
  fi
  echo "pg standby_state=$STANDBY_STATE"
  local i any
  any=$(rabbit_any 2>/dev/null || true)
  local members=
  [ -n "$any" ] && members=$(rabbit_members "$any" running | tr '\n' ' ')
  for i in 1 2 3; do
    local run=state=stopped
    [ -n "$(rabbit_pid "$i")" ] && run=state=running
    local inc=no
    case " $members " in *" $(rnode "$i") "*) inc=yes ;; esac
    echo "rabbit node=$(rnode "$i") amqp=$((amqp_base + i - 1)) dist=$((dist_base + i - 1)) $run in_cluster=$inc"
  done
}

# The killed (or stopped) old primary back as the standby of the current primary.
rejoin() {
  local n=$STANDBY p=$PRIMARY dir method=pg_rewind
  dir=$(pg_dir "$n")
  pg_running "$p" || die "the primary (node $p) is not running"
  if pg_running "$n"; then
    if in_recovery "$n" && wait_streaming "$p" "$n" any 2 2>/dev/null; then
      log "node $n already streams from $p"
    else
      log "node $n runs, but not as a standby of $p: stopping it"
      pg_stop "$n"
    fi
  fi
  if ! pg_running "$n"; then
    wait_backends_gone "$n"
    if [ -s "$dir/PG_VERSION" ]; then
      # PostgreSQL 15's pg_rewind reads the source's timeline from its control file, which a
      # promoted node updates only at its first checkpoint: before that, pg_rewind finds "the
      # same timeline", rewinds nothing, and the old primary can never follow.
      psql_at "$p" CHECKPOINT >/dev/null
      log "pg_rewind $dir from node $p"
      if as_user "$(pg_user)" "$pg_bin/pg_rewind" -D "$dir" \
          --source-server="host=127.0.0.1 port=$(pg_port "$p") user=postgres dbname=postgres" \
          >"$pg_root/$n.rewind.log" 2>&1; then
        make_standby_conf "$n" "$p"
        pg_start "$n"
        if ! wait_streaming "$p" "$n" any 60; then
          log "node $n does not stream after pg_rewind; a fresh base backup instead"
          pg_stop "$n"; method=pg_basebackup
        fi
      else
        log "pg_rewind failed ($(tail -n1 "$pg_root/$n.rewind.log")); a fresh base backup instead"
        method=pg_basebackup
      fi
    else
      method=pg_basebackup
    fi
    if [ "$method" = pg_basebackup ]; then
      pg_basebackup_to "$n" "$p"
      pg_start "$n"
      wait_streaming "$p" "$n" any 120 || die "node $n does not stream after a fresh base backup"
    fi
  fi
  apply_mode "$p" "$n"
  if [ "$MODE" = sync ]; then wait_streaming "$p" "$n" sync 60 || die "node $n streams but is not synchronous"; fi
  STANDBY_STATE=streaming
  write_roles
  rejoin_method=$method
}

case "$cmd" in
  up) cluster_up ;;
  down) cluster_down ;;
  env) print_env ;;
  status) status ;;

  rabbit-leader)
    q=${args[0]:?usage: rabbit-leader QUEUE [VHOST]}; vh=${args[1]:-/}
    start=$(now_ms)
    # During an election there is no leader for a moment: ask again, for up to 30 s.
    while [ $(( $(now_ms) - start )) -lt 30000 ]; do
      rc=0; members=$(quorum_status "$q" "$vh") || rc=$?
      [ "$rc" = 2 ] && die "no quorum queue $q in vhost $vh"
      leader=$(printf '%s\n' "$members" | awk '$2 == "leader" {print $1; exit}')
      if [ -n "$leader" ]; then
        log "leader of $q: $leader ($(( $(now_ms) - start )) ms)"
        echo "$leader"; exit 0
      fi
      sleep 0.5
    done
    die "no leader found for quorum queue $q (vhost $vh)" ;;

  rabbit-quorum-status)
    q=${args[0]:?usage: rabbit-quorum-status QUEUE [VHOST]}
    rc=0; quorum_status "$q" "${args[1]:-/}" || rc=$?
    [ "$rc" = 0 ] || die "$([ "$rc" = 2 ] && echo "no quorum queue $q" || echo "no running node answered quorum_status $q")" ;;

  rabbit-declare-quorum)
    q=${args[0]:?usage: rabbit-declare-quorum QUEUE [GROUP_SIZE]}; size=${args[1]:-3}
    i=$(rabbit_any) || die "no RabbitMQ node runs"
    rctl "$i" eval "rabbit_amqqueue:declare(rabbit_misc:r(<<\"/\">>, queue, <<\"$q\">>), true, false, [{<<\"x-queue-type\">>, longstr, <<\"quorum\">>}, {<<\"x-quorum-initial-group-size\">>, long, $size}], none, <<\"cluster.sh\">>)." >/dev/null
    echo "declared queue=$q type=quorum initial_group_size=$size via=$(rnode "$i")" ;;

  rabbit-kill)
    i=$(node_index "${args[0]:?usage: rabbit-kill NODE}")
    start=$(now_ms)
    pid=$(rabbit_pid "$i")
    [ -n "$pid" ] || die "$(rnode "$i") is not running"
    kill -9 "$pid"
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.05; done
    log "kill -9 $(rnode "$i") (pid $pid)"
    report "$start" "killed rabbit=$(rnode "$i") pid=$pid" ;;

  rabbit-restart)
    i=$(node_index "${args[0]:?usage: rabbit-restart NODE}")
    start=$(now_ms)
    [ -z "$(rabbit_pid "$i")" ] || log "$(rnode "$i") is already running"
    rabbit_launch "$i"
    rabbit_await "$i" 180 || die "$(rnode "$i") did not start again"
    # Back in the cluster: the others see it running.
    for _ in $(seq 1 120); do
      o=$(( i % 3 + 1 ))
      if rabbit_members "$o" running | grep -qx "$(rnode "$i")"; then break; fi
      sleep 0.5
    done
    rabbit_members "$o" running | grep -qx "$(rnode "$i")" || die "$(rnode "$i") runs but $(rnode "$o") does not see it"
    log "$(rnode "$i") is back in the cluster"
    report "$start" "restarted rabbit=$(rnode "$i") running_nodes=$(rabbit_members "$i" running | wc -l)" ;;

  pg-kill-primary)
    start=$(now_ms)
    pid=$(postmaster_pid "$PRIMARY")
    [ -n "$pid" ] || die "the primary (node $PRIMARY) is not running"
    kill -9 "$pid"
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.05; done
    log "kill -9 PostgreSQL primary node $PRIMARY (postmaster $pid, port $(pg_port "$PRIMARY"))"
    report "$start" "killed pg=$PRIMARY port=$(pg_port "$PRIMARY") pid=$pid" ;;

  pg-promote)
    start=$(now_ms)
    old=$PRIMARY new=$STANDBY
    pg_running "$new" || die "the standby (node $new) is not running: nothing to promote"
    in_recovery "$new" || die "node $new is not in recovery (already promoted?); roles in $roles"
    # Fencing: two primaries behind one address must never be; a live old primary is stopped.
    if pg_running "$old"; then log "the old primary (node $old) still runs: stopping it first"; pg_stop "$old"; fi
    as_user "$(pg_user)" "$pg_bin/pg_ctl" -D "$(pg_dir "$new")" -w -t 60 promote >/dev/null
    for _ in $(seq 1 100); do in_recovery "$new" || break; sleep 0.1; done
    in_recovery "$new" && die "node $new is still in recovery after pg_ctl promote"
    # No standby is left to confirm commits: until the old primary rejoins, the new one
    # commits alone (else every write would wait for a standby that is not there).
    apply_mode "$new" ""
    PRIMARY=$new; STANDBY=$old; STANDBY_STATE=down
    write_roles
    hap_point "$new"
    psql_rw 'SELECT 1' >/dev/null || die "the read-write address 127.0.0.1:$rw_port does not answer after the move"
    # The new timeline into the control file now (see rejoin), after the address moved.
    psql_at "$new" CHECKPOINT >/dev/null || log "CHECKPOINT on node $new failed"
    log "promoted node $new; read-write address 127.0.0.1:$rw_port -> $(pg_port "$new")"
    report "$start" "promoted pg=$new port=$(pg_port "$new") rw=127.0.0.1:$rw_port old_primary=$old" ;;

  pg-rejoin-old-primary)
    start=$(now_ms)
    if [ "$STANDBY_STATE" = streaming ] && pg_running "$STANDBY"; then
      log "node $STANDBY already streams from $PRIMARY; nothing to do"
      rejoin_method=none
      apply_mode "$PRIMARY" "$STANDBY"
    else
      rejoin
    fi
    sync=$(psql_at "$PRIMARY" "SELECT sync_state FROM pg_stat_replication WHERE application_name = '$(app_name "$STANDBY")'" | head -n1)
    log "node $STANDBY streams from $PRIMARY ($sync, by $rejoin_method)"
    report "$start" "rejoined pg=$STANDBY port=$(pg_port "$STANDBY") as=standby of=$PRIMARY method=$rejoin_method sync_state=$sync" ;;

  reset-rabbit)
    # Empties the cluster (what earlier runs left): vhost / deleted and created again, with
    # guest's permissions. (A node's `reset`, as services.sh does for one node, would take it
    # out of the cluster.)
    start=$(now_ms)
    i=$(rabbit_any) || die "no RabbitMQ node runs"
    rctl "$i" delete_vhost / >/dev/null 2>&1 || true
    rctl "$i" add_vhost / >/dev/null
    rctl "$i" set_permissions -p / guest '.*' '.*' '.*' >/dev/null
    report "$start" "reset rabbit vhost=/ via=$(rnode "$i")" ;;

  rabbitmqctl|rabbitmq-queues)
    [ ${#args[@]} -ge 1 ] || die "usage: $cmd NODE ARGS..."
    i=$(node_index "${args[0]}")
    cli_listen
    if [ "$cmd" = rabbitmqctl ]; then rctl "$i" "${args[@]:1}"; else rqueues "$i" "${args[@]:1}"; fi ;;

  *) echo "unknown command: $cmd (up, down, env, status, rabbit-leader, rabbit-kill, rabbit-restart, pg-kill-primary, pg-promote, pg-rejoin-old-primary, rabbit-quorum-status, rabbit-declare-quorum)" >&2; exit 2 ;;
esac
