#!/usr/bin/env python3
"""Every metric that deploy/prometheus/alerts.yml and the Grafana dashboard query must exist.

    metric_names.py [--design DESIGN.md] [--metrics FILE]... [--list]

--design: the names must be metrics DESIGN.md names: those of its "Observability" list, and
          those another section introduces in a code span (`payhook_rejected_deliveries_total{provider}`
          under "Webhook routes"), plus those listed with a reason in metrics_beyond_design.txt;
          histogram series NAME_bucket/_sum/_count count as NAME.
--metrics: a file of scraped /metrics text (Prometheus exposition format), e.g. from
          `curl -s http://127.0.0.1:8081/metrics > ingest.txt`. Give one per binary; a name
          must appear in at least one of them, and every label a query matches on must appear
          on that metric's samples (when the file has samples for it).
--list:   print the names used, and where, then exit.
Names Prometheus makes itself (up, scrape_*) are not looked for in /metrics.
Needs PyYAML. Exit 1 when a name is missing.
"""

import argparse
import json
import os
import re
import sys

import yaml

DEPLOY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTHETIC = re.compile(r"^(up|scrape_\w+)$")
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
            "bool", "offset", "inf", "nan", "atan2"}
HIST = re.compile(r"_(bucket|sum|count)$")


def selectors(expr):
    """(metric name, [label names matched]) for every selector in a PromQL expression."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)            # strings
    e = re.sub(r"\[[^\]]*\]", "", e)                         # ranges [5m], subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    out = []
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?", e):
        name, matchers, call = m.group(1), m.group(2), m.group(3)
        if call or name.lower() in KEYWORDS or re.fullmatch(r"\d.*", name):
            continue
        labels = re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers or "")
        out.append((name, labels))
    # Selectors written as {__name__="..."} are not used here; flag them rather than skip them.
    if "__name__" in e:
        sys.exit(f"metric_names: {expr!r} selects by __name__; name the metric instead")
    return out


def used_names():
    """{name: {"where": set, "labels": set}} over the alert rules and the dashboard."""
    used = {}

    def add(expr, where):
        expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
        expr = re.sub(r"\$\{?(\w+)\}?", "x", expr)
        for name, labels in selectors(expr):
            u = used.setdefault(name, {"where": set(), "labels": set()})
            u["where"].add(where)
            u["labels"].update(labels)

    alerts = yaml.safe_load(open(os.path.join(DEPLOY, "prometheus", "alerts.yml")))
    for g in alerts["groups"]:
        for r in g["rules"]:
            add(r["expr"], f"alert {r.get('alert') or r.get('record')}")
    dash = json.load(open(os.path.join(DEPLOY, "grafana", "payhook-dashboard.json")))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.match(r"label_values\(\s*([a-zA-Z_:][\w:]*)", q or "")
        if m:
            add(m.group(1), f"dashboard variable {v['name']}")
    for p in dash["panels"]:
        for t in p.get("targets", []):
            if t.get("expr"):
                add(t["expr"], f"dashboard panel {p['title']!r}")
    return used


def design_names(path):
    text = open(path).read()
    m = re.search(r"^## Observability\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    if not m:
        sys.exit(f"metric_names: no '## Observability' section in {path}")
    names = set(re.findall(r"\b(payhook_[a-z0-9_]+)", m.group(1)))
    # Elsewhere only code spans count: prose there also names databases and prefixes.
    names |= set(re.findall(r"`(payhook_[a-z0-9_]+)(?:\{[^`]*\})?`", text))
    # And the few the project added that DESIGN.md does not name yet, each with its reason.
    beyond = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metrics_beyond_design.txt")
    for line in open(beyond):
        if line.strip() and not line.startswith("#"):
            names.add(line.split()[0])
    return names


def scraped(path):
    """{name: set of label names seen on its samples} from exposition text."""
    names = {}
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.strip()
        m = re.match(r"#\s*(TYPE|HELP)\s+([a-zA-Z_:][\w:]*)", line)
        if m:
            names.setdefault(m.group(2), set())
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][\w:]*)(\{([^}]*)\})?\s", line)
        if m:
            labels = set(re.findall(r"([a-zA-Z_]\w*)\s*=", m.group(3) or ""))
            names.setdefault(m.group(1), set()).update(labels)
            names[m.group(1)].add("\0sampled")
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--design")
    ap.add_argument("--metrics", action="append", default=[])
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    used = used_names()
    if a.list:
        for n in sorted(used):
            print(f"{n}  labels={sorted(used[n]['labels'])}  in: {'; '.join(sorted(used[n]['where']))}")
        return 0
    bad = 0
    if a.design:
        listed = design_names(a.design)
        for n in sorted(used):
            if SYNTHETIC.match(n):
                continue
            if n not in listed and HIST.sub("", n) not in listed:
                print(f"  FAIL: {n} (used by {', '.join(sorted(used[n]['where']))}) is not a metric DESIGN.md names")
                bad += 1
        print(f"  {len([n for n in used if not SYNTHETIC.match(n)])} names used by alerts and dashboard "
              f"checked against {len(listed)} names of DESIGN.md")
    if a.metrics:
        seen = {}
        for f in a.metrics:
            for n, labels in scraped(f).items():
                seen.setdefault(n, set()).update(labels)
        for n in sorted(used):
            if SYNTHETIC.match(n):
                continue
            if n not in seen:
                print(f"  FAIL: {n} (used by {', '.join(sorted(used[n]['where']))}) is not in {', '.join(a.metrics)}")
                bad += 1
                continue
            if "\0sampled" in seen[n]:
                missing = used[n]["labels"] - seen[n]
                if missing:
                    print(f"  FAIL: {n} has no label {sorted(missing)} in the scraped output, "
                          f"but {', '.join(sorted(used[n]['where']))} match(es) on it")
                    bad += 1
        print(f"  {len([n for n in used if not SYNTHETIC.match(n)])} names used by alerts and dashboard "
              f"checked against {len(seen)} names scraped from {len(a.metrics)} file(s)")
    if not a.design and not a.metrics:
        ap.error("give --design and/or --metrics (or --list)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
