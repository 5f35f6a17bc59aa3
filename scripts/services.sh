#!/usr/bin/env bash
# Brings up (or down) a private PostgreSQL 15 cluster and a private RabbitMQ node on loopback,
# for running payhook locally and for its tests. Nothing here touches a system-wide service:
# each "stack" lives in its own state directory with its own ports.
#
#   scripts/services.sh up   [--stack NAME]   install what is missing, start both, print env
#   scripts/services.sh down [--stack NAME]   stop both
#   scripts/services.sh env  [--stack NAME]   print the export lines for DATABASE_URL/AMQP_URL
#   scripts/services.sh restart-pg|restart-rabbit|stop-rabbit|start-rabbit|reset-rabbit [--stack NAME]
#   scripts/services.sh rabbit-version [--stack NAME]   the running node's RabbitMQ version
#
# Stacks (PostgreSQL/RabbitMQ ports; each has its own Erlang distribution port too):
#   dev    5432/5672    the defaults of DESIGN.md (scripts/run)
#   test   55432/55672  the test suite (scripts/test), never colliding with a running dev stack
#   bench  56432/56672  the benchmark (scripts/bench)
#   chaos  57432/57672  the chaos run (scripts/chaos), whose restarts must not hit the others
# PAYHOOK_STATE_DIR overrides where the data lives (default: .payhook/<stack> in the
# repository); PAYHOOK_PG_PORT, PAYHOOK_AMQP_PORT and PAYHOOK_DIST_PORT override the ports.
set -euo pipefail

# The clustered setup (three RabbitMQ nodes, a PostgreSQL primary + standby behind one
# read-write address, and the faults of scripts/chaos --cluster) is scripts/cluster.sh:
#   scripts/services.sh up|down|env|status --cluster [--stack NAME] [--async]
#   scripts/services.sh rabbit-leader|rabbit-kill|rabbit-restart|pg-kill-primary|pg-promote|pg-rejoin-old-primary ...
for arg in "$@"; do
  if [ "$arg" = --cluster ]; then exec "$(dirname "$0")/cluster.sh" "$@"; fi
done
case "${1:-}" in
  rabbit-leader|rabbit-kill|rabbit-restart|rabbit-quorum-status|rabbit-declare-quorum|pg-kill-primary|pg-promote|pg-rejoin-old-primary)
    exec "$(dirname "$0")/cluster.sh" "$@" ;;
esac

cmd=${1:-up}
shift || true
stack=dev
while [ $# -gt 0 ]; do
  case "$1" in
    --stack) stack=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
case "$stack" in
  dev)   pg_port=${PAYHOOK_PG_PORT:-5432};  amqp_port=${PAYHOOK_AMQP_PORT:-5672};  dist_port=25672 ;;
  test)  pg_port=${PAYHOOK_PG_PORT:-55432}; amqp_port=${PAYHOOK_AMQP_PORT:-55672}; dist_port=45672 ;;
  bench) pg_port=${PAYHOOK_PG_PORT:-56432}; amqp_port=${PAYHOOK_AMQP_PORT:-56672}; dist_port=46672 ;;
  chaos) pg_port=${PAYHOOK_PG_PORT:-57432}; amqp_port=${PAYHOOK_AMQP_PORT:-57672}; dist_port=47672 ;;
  *)
    # Any other name is a throwaway stack (scripts/tests use one) whose ports must all be given.
    if [ -z "${PAYHOOK_PG_PORT:-}" ] || [ -z "${PAYHOOK_AMQP_PORT:-}" ] || [ -z "${PAYHOOK_DIST_PORT:-}" ]; then
      echo "unknown stack: $stack (dev, test, bench or chaos; any other name needs PAYHOOK_PG_PORT, PAYHOOK_AMQP_PORT and PAYHOOK_DIST_PORT)" >&2
      exit 2
    fi
    pg_port=$PAYHOOK_PG_PORT; amqp_port=$PAYHOOK_AMQP_PORT; dist_port=$PAYHOOK_DIST_PORT ;;
esac
dist_port=${PAYHOOK_DIST_PORT:-$dist_port}
state=${PAYHOOK_STATE_DIR:-$repo/.payhook/$stack}
# As root, the data must be reachable by the postgres and rabbitmq users; a checkout under a
# private folder (/root/...) is not, so its state then lives under /var/tmp instead.
if [ -z "${PAYHOOK_STATE_DIR:-}" ] && [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 \
  && ! setpriv --reuid=postgres --regid=postgres --init-groups test -x "$repo" 2>/dev/null; then
  state=/var/tmp/payhook-$(printf '%s' "$repo" | cksum | cut -d' ' -f1)/$stack
fi
pg_bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
pg_data=$state/pg
rmq_base=$state/rabbitmq
node=payhook-$stack@localhost

log() { printf '[services] %s\n' "$*" >&2; }

# initdb and postgres refuse to run as root; RabbitMQ should not run as root either.
as_user() {
  local user=$1; shift
  # From /, which every user may read (Erlang looks in the working directory first).
  (
    cd /
    if [ "$(id -u)" != 0 ]; then "$@"
    # setpriv keeps our raised open-files limit; runuser would reset it through PAM.
    elif command -v setpriv >/dev/null 2>&1; then
      setpriv --reuid="$user" --regid="$user" --init-groups env HOME="$(getent passwd "$user" | cut -d: -f6)" "$@"
    else runuser -u "$user" -- "$@"; fi
  )
}

pg_user() { if [ "$(id -u)" = 0 ]; then echo postgres; else id -un; fi; }
rmq_user() { if [ "$(id -u)" = 0 ]; then echo rabbitmq; else id -un; fi; }

# The variables that point a RabbitMQ command at this stack's node (env(1) runs under runuser).
rmq_env() {
  rmq_cmd=(env RABBITMQ_NODENAME="$node" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$amqp_port" \
    RABBITMQ_DIST_PORT="$dist_port" RABBITMQ_MNESIA_BASE="$rmq_base/mnesia" \
    RABBITMQ_LOG_BASE="$rmq_base/log" RABBITMQ_CONFIG_FILE="$rmq_base/rabbitmq" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$rmq_base/enabled_plugins" RABBITMQ_PID_FILE="$rmq_base/pid" \
    HOME="$rmq_base" "$@")
}

install_missing() {
  if [ ! -x "$pg_bin/initdb" ]; then
    log "PostgreSQL 15 binaries not found in $pg_bin; installing postgresql-15"
    need_root "postgresql-15"
    apt_install postgresql-15
  fi
  if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    log "RabbitMQ not found; installing Debian's rabbitmq-server"
    need_root "rabbitmq-server"
    apt_install rabbitmq-server
  fi
}

need_root() {
  if [ "$(id -u)" != 0 ]; then
    log "$1 is missing and installing it needs root: sudo apt-get install -y $1"
    exit 1
  fi
}

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "$@" >/dev/null
  # Debian's package starts its own system node where it can; ours is private, so stop that one.
  if command -v service >/dev/null 2>&1; then service rabbitmq-server stop >/dev/null 2>&1 || true; fi
}

pg_up() {
  mkdir -p "$state"
  if [ ! -s "$pg_data/PG_VERSION" ]; then
    log "initdb $pg_data"
    mkdir -p "$pg_data"
    if [ "$(id -u)" = 0 ]; then chown -R "$(pg_user)" "$state"; fi
    # The parent folders must be traversable by the postgres user.
    as_user "$(pg_user)" "$pg_bin/initdb" -D "$pg_data" -U postgres --auth=trust -E UTF8 >/dev/null
    cat >>"$pg_data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$pg_data'
max_connections = 400
shared_buffers = 256MB
fsync = on
synchronous_commit = on
logging_collector = off
EOF
  fi
  if as_user "$(pg_user)" "$pg_bin/pg_ctl" -D "$pg_data" status >/dev/null 2>&1; then
    log "PostgreSQL already running on 127.0.0.1:$pg_port"
  else
    log "starting PostgreSQL on 127.0.0.1:$pg_port"
    as_user "$(pg_user)" "$pg_bin/pg_ctl" -D "$pg_data" -o "-p $pg_port" -l "$pg_data/server.log" -w -t 60 start >/dev/null
  fi
}

pg_down() {
  if [ -d "$pg_data" ]; then
    as_user "$(pg_user)" "$pg_bin/pg_ctl" -D "$pg_data" -m fast stop >/dev/null 2>&1 || true
  fi
}

rabbit_running() {
  rmq_env /usr/lib/rabbitmq/bin/rabbitmqctl -n "$node" -q await_startup
  as_user "$(rmq_user)" "${rmq_cmd[@]}" >/dev/null 2>&1
}

rabbit_up() {
  mkdir -p "$rmq_base/mnesia" "$rmq_base/log"
  [ -f "$rmq_base/rabbitmq.conf" ] || cat >"$rmq_base/rabbitmq.conf" <<EOF
loopback_users.guest = true
listeners.tcp.default = 127.0.0.1:$amqp_port
# A laptop or CI disk is often fuller than a server's: don't block publishers at 50 MB free.
disk_free_limit.absolute = 10MB
log.console = false
log.file.level = warning
EOF
  [ -f "$rmq_base/enabled_plugins" ] || echo '[].' >"$rmq_base/enabled_plugins"
  if [ ! -f "$rmq_base/.erlang.cookie" ]; then
    head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$rmq_base/.erlang.cookie"
    chmod 400 "$rmq_base/.erlang.cookie"
  fi
  if [ "$(id -u)" = 0 ]; then chown -R "$(rmq_user)" "$rmq_base"; fi
  if rabbit_running; then
    log "RabbitMQ already running on 127.0.0.1:$amqp_port"
    return
  fi
  log "starting RabbitMQ on 127.0.0.1:$amqp_port (node $node)"
  # Every quorum queue holds file handles; the default 1024 runs out under a test suite.
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  rmq_env /usr/lib/rabbitmq/bin/rabbitmq-server -detached
  as_user "$(rmq_user)" "${rmq_cmd[@]}" >/dev/null 2>&1
  for _ in $(seq 1 120); do
    if rabbit_running; then return; fi
    sleep 1
  done
  log "RabbitMQ did not start; its log: $rmq_base/log"
  tail -n 30 "$rmq_base/log/"*.log >&2 || true
  exit 1
}

# The OS pid of this stack's Erlang VM, if one runs: from the pid file, else from the process
# table (a node started by hand, or killed before it wrote the file, has none).
rabbit_pid() {
  local pid=""
  [ -f "$rmq_base/pid" ] && pid=$(tr -dc 0-9 <"$rmq_base/pid")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; return; fi
  # The VM's arguments name its home, which is this stack's own directory.
  pgrep -f "beam.smp .*-home $rmq_base( |$)" | head -n1 || true
}

rabbit_down() {
  # Returns within seconds whether the node is up, down or half-started: `rabbitmqctl stop
  # PIDFILE` would wait for ever for a pid file that a half-started node never wrote, so stop
  # without it, then wait (bounded) for the VM itself to exit, so a start right after
  # (restart-rabbit) never finds the old node still shutting down.
  local pid
  pid=$(rabbit_pid)
  if [ -z "$pid" ]; then rm -f "$rmq_base/pid"; return; fi
  rmq_env timeout 30 /usr/lib/rabbitmq/bin/rabbitmqctl -n "$node" -q stop
  as_user "$(rmq_user)" "${rmq_cmd[@]}" >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "RabbitMQ node $node did not stop in 30 s; killing it"
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$rmq_base/pid"
}

print_env() {
  echo "export DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/payhook"
  echo "export AMQP_URL=amqp://guest:guest@127.0.0.1:$amqp_port/%2f"
  echo "export PAYHOOK_PG_DATA=$pg_data"
  echo "export PAYHOOK_RABBIT_NODE=$node"
  echo "export PAYHOOK_RABBIT_PID_FILE=$rmq_base/pid"
}

case "$cmd" in
  up) install_missing; pg_up; rabbit_up; print_env ;;
  down) rabbit_down; pg_down ;;
  env) print_env ;;
  restart-pg)
    as_user "$(pg_user)" "$pg_bin/pg_ctl" -D "$pg_data" -o "-p $pg_port" -l "$pg_data/server.log" -m fast -w restart >/dev/null ;;
  stop-rabbit) rabbit_down ;;
  start-rabbit) rabbit_up ;;
  restart-rabbit) rabbit_down; rabbit_up ;;
  rabbit-version)
    rmq_env /usr/lib/rabbitmq/bin/rabbitmqctl -n "$node" -q version
    as_user "$(rmq_user)" "${rmq_cmd[@]}" ;;
  reset-rabbit)
    # Deletes every queue and exchange of this stack's node (what earlier test runs left).
    for step in stop_app reset start_app; do
      rmq_env /usr/lib/rabbitmq/bin/rabbitmqctl -n "$node" -q "$step"
      as_user "$(rmq_user)" "${rmq_cmd[@]}" >/dev/null
    done ;;
  *) echo "unknown command: $cmd" >&2; exit 2 ;;
esac
