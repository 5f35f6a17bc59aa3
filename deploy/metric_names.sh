#!/usr/bin/env bash
# Checks that every metric deploy/prometheus/alerts.yml and deploy/grafana/*.json query exists,
# so a renamed metric cannot silently break an alert or a panel.
#
#   deploy/metric_names.sh                                  against the metrics DESIGN.md names
#   deploy/metric_names.sh --metrics ingest.txt --metrics worker.txt
#                                                           against scraped /metrics output (and DESIGN.md)
#   deploy/metric_names.sh --list                           the names used, and where
#
# DESIGN.md is ../shared/DESIGN.md beside the repository unless PAYHOOK_DESIGN names it.
# Needs python3 with PyYAML (deploy/check.sh's tool venv has it; Debian: python3-yaml).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
py=${PAYHOOK_DEPLOY_PYTHON:-}
if [ -z "$py" ]; then
  if [ -x "$repo/.payhook/deploy-tools/venv/bin/python" ]; then py=$repo/.payhook/deploy-tools/venv/bin/python; else py=python3; fi
fi
design=${PAYHOOK_DESIGN:-$repo/../shared/DESIGN.md}
args=()
case " $* " in
  *" --list "*|*" --design "*) ;;
  *) if [ -f "$design" ]; then args+=(--design "$design"); else echo "  (DESIGN.md not found at $design: not compared with it)"; fi ;;
esac
exec "$py" "$here/tools/metric_names.py" "${args[@]}" "$@"
