#!/usr/bin/env python3
"""Static checks of payhook's deployment files, called by deploy/check.sh.

    validate.py k8s RENDERED.yaml [K8S_VERSION...]   Kubernetes schemas (kubernetes-validate,
                                                     strict) + KEDA schema + cross-references
    validate.py k8s-cluster RENDERED.yaml [K8S_VERSION...]
                                                     the same, + the operators' resources
                                                     (RabbitmqCluster, CloudNativePG Cluster)
                                                     against their CRDs' schemas (deploy/tools/
                                                     crd) and what payhook's guarantee needs
                                                     of them (3 nodes, synchronous standby)
    validate.py dashboard DASHBOARD.json OUT.rules   dashboard structure; writes its queries as
                                                     recording rules, for `promtool check rules`
    validate.py compose CONFIG.yaml COMPOSE.yml ENV_EXAMPLE
                                                     what `docker-compose config` printed + the
                                                     raw file: services, healthchecks, secrets
    validate.py compose-cluster CONFIG.yaml COMPOSE.yml ENV_EXAMPLE
                                                     the same for docker-compose.cluster.yml:
                                                     3 RabbitMQ nodes, primary + sync standby
    validate.py dockerfile Dockerfile Cargo.toml     build and runtime stages, user, ports
    validate.py alerts-tested ALERTS.yml TESTS.yml   every alert has a firing and a quiet test

Each prints what it checked; any failure is printed as `  FAIL: ...` and exits 1.
"""

import json
import os
import re
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
FAILURES = []


def fail(msg):
    FAILURES.append(msg)
    print(f"  FAIL: {msg}")


def done(what):
    if FAILURES:
        print(f"{what}: {len(FAILURES)} problem(s)")
        sys.exit(1)


# ---------------------------------------------------------------------------------- k8s ----
# Operators' custom resources: (apiVersion, kind) -> the schema made from the operator's CRD
# (deploy/tools/crd_schema.py; the versions are named inside each file).
OPERATOR_SCHEMAS = {
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): "rabbitmqcluster.schema.json",
    ("postgresql.cnpg.io/v1", "Cluster"): "cnpg-cluster.schema.json",
}


def operator_pod_labels(by_kind):
    """The labels the operators put on the pods of their resources (for PDB selectors)."""
    pods = {}
    for r in by_kind.get("RabbitmqCluster", []):
        pods[f"RabbitmqCluster {r['metadata']['name']}"] = {"app.kubernetes.io/name": r["metadata"]["name"]}
    for c in by_kind.get("Cluster", []):
        pods[f"Cluster {c['metadata']['name']}"] = {"cnpg.io/cluster": c["metadata"]["name"]}
    return pods


def k8s(rendered, versions, cluster=False):
    import jsonschema
    import kubernetes_validate.utils as kv

    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    if not docs:
        fail("no Kubernetes object rendered")
    keda_schema = json.load(open(os.path.join(HERE, "keda.schema.json")))
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
        name = f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"
        if d.get("apiVersion", "").startswith("keda.sh/"):
            if d.get("kind") not in keda_schema["$defs"]:
                fail(f"{name}: no KEDA schema for this kind in keda.schema.json")
                continue
            schema = {k: v for k, v in keda_schema.items() if k != "oneOf"}
            schema["$ref"] = f"#/$defs/{d['kind']}"
            for e in jsonschema.Draft202012Validator(schema).iter_errors(d):
                where = "/".join(map(str, e.absolute_path))
                fail(f"{name}: KEDA schema: {e.message[:300]} at {where}")
            # The parts KEDA copies into Kubernetes objects, against Kubernetes' own schemas.
            meta_probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": d.get("metadata", {})}
            wrapped = [("metadata", meta_probe)]
            behavior = (d.get("spec", {}).get("advanced", {})
                        .get("horizontalPodAutoscalerConfig", {}).get("behavior"))
            if behavior is not None:
                wrapped.append(("advanced.horizontalPodAutoscalerConfig.behavior", {
                    "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                    "metadata": {"name": "probe"},
                    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
                             "maxReplicas": 1, "behavior": behavior}}))
            for part, obj in wrapped:
                for v in versions:
                    try:
                        kv.validate(obj, v, strict=True)
                    except Exception as e:  # noqa: BLE001 - report whatever the validator says
                        fail(f"{name}: {part} (Kubernetes {v}): {getattr(e, 'message', e)}")
            print(f"  {name}: KEDA schema (own, from KEDA's docs) + metadata/behavior vs Kubernetes schemas")
            continue
        op_schema = OPERATOR_SCHEMAS.get((d.get("apiVersion"), d.get("kind")))
        if op_schema:
            schema = json.load(open(os.path.join(HERE, "crd", op_schema)))
            for e in jsonschema.Draft4Validator(schema).iter_errors(d):
                where = "/".join(map(str, e.absolute_path))
                fail(f"{name}: CRD schema ({op_schema}): {e.message[:300]} at {where}")
            meta_probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": d.get("metadata", {})}
            for v in versions:
                try:
                    kv.validate(meta_probe, v, strict=True)
                except Exception as e:  # noqa: BLE001
                    fail(f"{name}: metadata (Kubernetes {v}): {getattr(e, 'message', e)}")
            print(f"  {name}: the operator's CRD schema (strict, {op_schema}) + metadata vs Kubernetes schemas")
            continue
        for v in versions:
            try:
                kv.validate(d, v, strict=True)
            except Exception as e:  # noqa: BLE001
                path = "/".join(map(str, getattr(e, "absolute_path", []) or []))
                fail(f"{name}: Kubernetes {v} schema (strict): {getattr(e, 'message', e)} {path}")
        print(f"  {name}: Kubernetes {', '.join(versions)} schemas (strict)")

    # Cross-references that no schema sees.
    if "Secret" in by_kind:
        fail("a Secret is part of the rendered manifests: secrets must be created with kubectl, not kept in git")
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    configmaps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    for want in ("payhook-ingest", "payhook-worker"):
        if want not in deployments:
            fail(f"Deployment {want} missing")
    for name, d in deployments.items():
        spec = d["spec"]
        if "replicas" in spec:
            fail(f"Deployment {name}: sets replicas, which its autoscaler owns (every apply would reset it)")
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"].get("labels", {})
        sel = spec["selector"].get("matchLabels", {})
        if any(labels.get(k) != v for k, v in sel.items()):
            fail(f"Deployment {name}: selector does not match its pod labels")
        psc = pod.get("securityContext", {})
        if not psc.get("runAsNonRoot") or not psc.get("runAsUser"):
            fail(f"Deployment {name}: runAsNonRoot and a numeric runAsUser are required")
        for c in pod["containers"]:
            cn = f"Deployment {name} container {c['name']}"
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")):
                p = c.get(probe)
                if not p or p.get("httpGet", {}).get("path") != path:
                    fail(f"{cn}: {probe} must be an httpGet of {path}")
                    continue
                port = p["httpGet"]["port"]
                if isinstance(port, str) and port not in ports:
                    fail(f"{cn}: {probe} names port {port!r}, which the container does not declare")
            res = c.get("resources", {})
            if not res.get("requests", {}).get("cpu") or not res.get("requests", {}).get("memory"):
                fail(f"{cn}: cpu and memory requests are required (the HPA scales on CPU requests)")
            if not res.get("limits", {}).get("memory"):
                fail(f"{cn}: a memory limit is required")
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                fail(f"{cn}: allowPrivilegeEscalation must be false")
            for e in c.get("env", []):
                if "value" in e and re.search(r"SECRET|PASSWORD|TOKEN|_KEY|HASH|DATABASE_URL|AMQP_URL", e["name"]):
                    fail(f"{cn}: {e['name']} is inlined; take it from a Secret (secretKeyRef/envFrom)")
            secret_refs = [s["secretRef"]["name"] for s in c.get("envFrom", []) if "secretRef" in s]
            secret_refs += [e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", [])
                            if "secretKeyRef" in e.get("valueFrom", {})]
            if "payhook-secrets" not in secret_refs:
                fail(f"{cn}: does not reference the Secret payhook-secrets")
            for s in c.get("envFrom", []):
                if "configMapRef" in s and s["configMapRef"]["name"] not in configmaps:
                    fail(f"{cn}: ConfigMap {s['configMapRef']['name']} is not in the manifests")
            if c.get("image") in (None, "payhook", "payhook:latest"):
                fail(f"{cn}: image {c.get('image')!r} was not set by the kustomization")
    pod_labels = {n: d["spec"]["template"]["metadata"].get("labels", {}) for n, d in deployments.items()}

    def selects(selector, what):
        hits = [n for n, l in pod_labels.items() if all(l.get(k) == v for k, v in selector.items())]
        if not hits:
            fail(f"{what}: selector {selector} matches no Deployment's pods")
        return hits

    for s in by_kind.get("Service", []):
        hits = selects(s["spec"].get("selector", {}), f"Service {s['metadata']['name']}")
        for p in s["spec"]["ports"]:
            t = p.get("targetPort")
            for n in hits:
                names = {pp.get("name") for c in deployments[n]["spec"]["template"]["spec"]["containers"] for pp in c.get("ports", [])}
                if isinstance(t, str) and t not in names:
                    fail(f"Service {s['metadata']['name']}: targetPort {t!r} is not a port of {n}")
    op_pods = operator_pod_labels(by_kind)
    for p in by_kind.get("PodDisruptionBudget", []):
        sel = p["spec"]["selector"].get("matchLabels", {})
        if any(all(l.get(k) == v for k, v in sel.items()) for l in op_pods.values()):
            continue
        selects(sel, f"PodDisruptionBudget {p['metadata']['name']}")
    pdb_targets = {n for p in by_kind.get("PodDisruptionBudget", []) for n, l in pod_labels.items()
                   if all(l.get(k) == v for k, v in p["spec"]["selector"].get("matchLabels", {}).items())}
    for n in deployments:
        if n not in pdb_targets:
            fail(f"Deployment {n}: no PodDisruptionBudget")
    scaled = {}
    for h in by_kind.get("HorizontalPodAutoscaler", []):
        t = h["spec"]["scaleTargetRef"]["name"]
        scaled.setdefault(t, []).append(f"HPA {h['metadata']['name']}")
        if h["spec"]["metrics"][0]["resource"]["name"] != "cpu":
            fail(f"HPA {h['metadata']['name']}: expected to scale on cpu")
    trigger_auths = {t["metadata"]["name"]: t for t in by_kind.get("TriggerAuthentication", [])}
    prefix = next((c["data"].get("PAYHOOK_AMQP_PREFIX") for c in configmaps.values()
                   if "PAYHOOK_AMQP_PREFIX" in c.get("data", {})), "payhook")
    for so in by_kind.get("ScaledObject", []):
        t = so["spec"]["scaleTargetRef"]["name"]
        scaled.setdefault(t, []).append(f"ScaledObject {so['metadata']['name']}")
        if so["spec"].get("minReplicaCount", 0) < 1:
            fail(f"ScaledObject {so['metadata']['name']}: minReplicaCount must be >= 1 (the reconciler runs in workers)")
        for tr in so["spec"]["triggers"]:
            if tr["type"] == "rabbitmq" and tr["metadata"].get("queueName") != f"{prefix}.events":
                fail(f"ScaledObject {so['metadata']['name']}: queueName {tr['metadata'].get('queueName')!r} "
                     f"is not {prefix}.events (PAYHOOK_AMQP_PREFIX={prefix})")
            ref = tr.get("authenticationRef", {}).get("name")
            if ref and ref not in trigger_auths:
                fail(f"ScaledObject {so['metadata']['name']}: TriggerAuthentication {ref} is not in the manifests")
    for t, owners in scaled.items():
        if t not in deployments:
            fail(f"{owners[0]}: scales {t}, which is not a Deployment here")
        if len(owners) > 1:
            fail(f"Deployment {t} has two autoscalers: {owners}")
    if "payhook-ingest" not in scaled or not scaled["payhook-ingest"][0].startswith("HPA"):
        fail("payhook-ingest has no HorizontalPodAutoscaler")
    if "payhook-worker" not in scaled or not scaled["payhook-worker"][0].startswith("ScaledObject"):
        fail("payhook-worker has no KEDA ScaledObject")
    print("  checked cross-references: selectors, probe ports, Secret refs, autoscaler targets, KEDA queue name, PDBs")
    if cluster:
        k8s_cluster_checks(by_kind)
    done("k8s")


def k8s_cluster_checks(by_kind):
    """What payhook's guarantee needs of the clustered setup (DESIGN.md "Scale-out")."""
    rmqs, pgs = by_kind.get("RabbitmqCluster", []), by_kind.get("Cluster", [])
    if len(rmqs) != 1:
        fail(f"expected one RabbitmqCluster, found {len(rmqs)}")
    if len(pgs) != 1:
        fail(f"expected one CloudNativePG Cluster, found {len(pgs)}")
    op_pods = operator_pod_labels(by_kind)
    pdb_selectors = [p["spec"]["selector"].get("matchLabels", {}) for p in by_kind.get("PodDisruptionBudget", [])]
    for r in rmqs:
        name, spec = f"RabbitmqCluster {r['metadata']['name']}", r.get("spec", {})
        replicas = spec.get("replicas", 1)
        if replicas < 3 or replicas % 2 == 0:
            fail(f"{name}: replicas is {replicas}: quorum queues need an odd number >= 3 to survive a node")
        conf = spec.get("rabbitmq", {}).get("additionalConfig", "")
        if not re.search(r"^\s*cluster_partition_handling\s*=\s*pause_minority\s*$", conf, re.M):
            fail(f"{name}: additionalConfig must set cluster_partition_handling = pause_minority")
        if not spec.get("affinity", {}).get("podAntiAffinity"):
            fail(f"{name}: no podAntiAffinity: two RabbitMQ nodes could share a Kubernetes node")
        labels = op_pods[f"RabbitmqCluster {r['metadata']['name']}"]
        if not any(sel and all(labels.get(k) == v for k, v in sel.items()) for sel in pdb_selectors):
            fail(f"{name}: no PodDisruptionBudget covers its pods (the operator creates none)")
    for c in pgs:
        name, spec = f"Cluster {c['metadata']['name']}", c.get("spec", {})
        instances = spec.get("instances", 1)
        if instances < 2:
            fail(f"{name}: instances is {instances}: a failover needs a standby")
        pg = spec.get("postgresql", {})
        sync = pg.get("synchronous")
        legacy = (spec.get("minSyncReplicas", 0), spec.get("maxSyncReplicas", 0))
        if sync:
            if sync.get("number", 0) < 1 or sync.get("number", 0) >= instances:
                fail(f"{name}: synchronous.number must be >= 1 and below instances ({instances})")
            if sync.get("dataDurability", "required") != "required":
                fail(f"{name}: synchronous.dataDurability must be required: 'preferred' goes on "
                     "unconfirmed when no standby answers, and a failover then loses acknowledged events")
            if legacy != (0, 0):
                fail(f"{name}: both synchronous and the deprecated min/maxSyncReplicas are set")
        elif legacy[0] >= 1:
            if not (legacy[0] <= legacy[1] < instances):
                fail(f"{name}: need 1 <= minSyncReplicas <= maxSyncReplicas < instances, got {legacy} with {instances}")
        else:
            fail(f"{name}: no synchronous replication (postgresql.synchronous, or minSyncReplicas >= 1): "
                 "with asynchronous replication a failover can lose acknowledged events")
        params = pg.get("parameters", {})
        if params.get("synchronous_commit", "on") not in ("on", "remote_apply"):
            fail(f"{name}: synchronous_commit is {params.get('synchronous_commit')!r}: a commit must wait "
                 "for the standby's flush (on) or apply (remote_apply)")
        if "synchronous_standby_names" in params:
            fail(f"{name}: synchronous_standby_names is the operator's to set")
        if spec.get("enablePDB") is False:
            fail(f"{name}: enablePDB is false: a drain could take primary and standby at once")
        if not spec.get("bootstrap", {}).get("initdb", {}).get("database"):
            fail(f"{name}: bootstrap.initdb.database is not set (payhook's database)")
    for t in by_kind.get("TriggerAuthentication", []):
        for ref in t["spec"].get("secretTargetRef", []):
            if ref.get("parameter") == "host" and ref.get("key") == "AMQP_URL":
                fail(f"TriggerAuthentication {t['metadata']['name']}: KEDA's rabbitmq scaler takes one URL, "
                     "and AMQP_URL lists the cluster's nodes: point it at a single-URL key")
    print("  checked the cluster: RabbitMQ replicas odd >= 3, pause_minority, anti-affinity, PDB; PostgreSQL "
          "instances >= 2, synchronous replication required, synchronous_commit, PDBs; KEDA's single URL")


# ---------------------------------------------------------------------------- dashboard ----
def dashboard(path, out_rules):
    d = json.load(open(path))
    for k in ("title", "uid", "panels", "schemaVersion", "templating"):
        if k not in d:
            fail(f"dashboard has no {k!r}")
    variables = {v["name"] for v in d.get("templating", {}).get("list", [])}
    ids, rules, cells = set(), [], {}
    for p in d.get("panels", []):
        if p.get("id") in ids:
            fail(f"panel id {p.get('id')} used twice")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")) or g["x"] + g["w"] > 24:
            fail(f"panel {p.get('title')!r}: bad gridPos {g}")
            continue
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    fail(f"panel {p.get('title')!r} overlaps {cells[(x, y)]!r}")
                    break
                cells[(x, y)] = p.get("title")
            else:
                continue
            break
        if p.get("type") == "row":
            continue
        targets = p.get("targets") or []
        if not targets:
            fail(f"panel {p.get('title')!r} has no query")
        for t in targets:
            expr = t.get("expr", "")
            if not expr:
                fail(f"panel {p.get('title')!r} target {t.get('refId')} has no expr")
                continue
            for var in re.findall(r"\$(?!__)(\w+)", expr):
                if var not in variables:
                    fail(f"panel {p.get('title')!r} uses ${var}, which the dashboard does not define")
            ds = (t.get("datasource") or p.get("datasource") or {}).get("uid", "")
            if ds != "${datasource}":
                fail(f"panel {p.get('title')!r}: datasource must be the ${{datasource}} variable, not {ds!r}")
            concrete = (expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
                        .replace("$provider", ".*"))
            rules.append({"record": f"dashboard:panel_{p['id']}_{t.get('refId', 'A')}", "expr": concrete})
    yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, open(out_rules, "w"), sort_keys=False)
    n = sum(1 for p in d.get("panels", []) if p.get("type") != "row")
    print(f"  {n} panels, {len(rules)} queries: unique ids, no overlap, variables defined, ${{datasource}} everywhere")
    done("dashboard")


# ------------------------------------------------------------------------------ compose ----
def compose(config_path, raw_path, env_example):
    cfg = yaml.safe_load(open(config_path))
    services = cfg.get("services", {})
    want = {"postgres", "rabbitmq", "ingest", "worker-1", "worker-2", "prometheus"}
    if set(services) != want:
        fail(f"services are {sorted(services)}, expected {sorted(want)}")
    img = lambda s: services.get(s, {}).get("image", "")  # noqa: E731
    if not re.fullmatch(r"postgres:15(\..*)?(-.*)?", img("postgres")):
        fail(f"postgres image is {img('postgres')!r}, expected postgres:15")
    m = re.fullmatch(r"rabbitmq:(\d+)(?:\.(\d+))?.*-management", img("rabbitmq"))
    if not m or (int(m.group(1)), int(m.group(2) or 99)) < (3, 8):
        fail(f"rabbitmq image {img('rabbitmq')!r}: the management image >= 3.8 is needed (quorum queues)")
    for name, s in services.items():
        hc = s.get("healthcheck", {}).get("test")
        if not hc:
            fail(f"service {name} has no healthcheck")
    hc_text = lambda s: " ".join(services.get(s, {}).get("healthcheck", {}).get("test", []))  # noqa: E731
    if "pg_isready" not in hc_text("postgres"):
        fail("postgres healthcheck must use pg_isready")
    if "rabbitmq-diagnostics" not in hc_text("rabbitmq"):
        fail("rabbitmq healthcheck must use rabbitmq-diagnostics")
    expected_ops = {"ingest": "8081", "worker-1": "8082", "worker-2": "8082"}
    for name, port in expected_ops.items():
        s = services.get(name, {})
        if "/healthz" not in hc_text(name) or f":{port}/" not in hc_text(name):
            fail(f"{name} healthcheck must call /healthz on port {port}")
        if "curl" not in hc_text(name):
            fail(f"{name} healthcheck: the runtime image has curl, use it (or change deploy/Dockerfile)")
        deps = s.get("depends_on", {})
        for dep in ("postgres", "rabbitmq"):
            if not isinstance(deps, dict) or deps.get(dep, {}).get("condition") != "service_healthy":
                fail(f"{name} must depend on {dep} with condition service_healthy")
        if s.get("build", {}).get("dockerfile") != "deploy/Dockerfile":
            fail(f"{name} must build deploy/Dockerfile")
        cmd = s.get("command") or []
        cmd = cmd if isinstance(cmd, list) else cmd.split()
        exp = ["payhook-ingest"] if name == "ingest" else ["payhook-worker", "run"]
        if cmd != exp:
            fail(f"{name} command is {cmd}, expected {exp}")
    for w in ("worker-1", "worker-2"):
        if services.get(w, {}).get("environment", {}).get("WORKER_OPS_ADDR") != "0.0.0.0:8082":
            fail(f"{w}: WORKER_OPS_ADDR must be 0.0.0.0:8082")
    ingest_env = services.get("ingest", {}).get("environment", {})
    for k, v in (("INGEST_ADDR", "0.0.0.0:8080"), ("INGEST_OPS_ADDR", "0.0.0.0:8081")):
        if ingest_env.get(k) != v:
            fail(f"ingest: {k} is {ingest_env.get(k)!r}, expected {v} (from .env.example)")
    vols = " ".join(str(v.get("source", "")) + ":" + str(v.get("target", "")) if isinstance(v, dict) else str(v)
                    for v in services.get("prometheus", {}).get("volumes", []))
    if "deploy/prometheus.yml:/etc/prometheus/prometheus.yml" not in vols or "/etc/prometheus/prometheus" not in vols.replace("prometheus.yml", ""):
        fail("prometheus must mount deploy/prometheus.yml and deploy/prometheus/ (rule files)")
    # Secrets: none written into the compose file itself.
    raw = yaml.safe_load(open(raw_path))
    for name, s in (raw.get("services") or {}).items():
        env = s.get("environment") or {}
        if not isinstance(env, dict):
            env = dict((e.split("=", 1) + [""])[:2] for e in env)
        for k, v in env.items():
            if re.search(r"SECRET|PASSWORD|PASS$|TOKEN|_KEY|HASH|DATABASE_URL|AMQP_URL", k) and not re.fullmatch(r"\$\{[^}]+\}", str(v)):
                fail(f"docker-compose.yml service {name}: {k} has a literal value; take it from .env")
    # Every ${VAR} the compose file interpolates, and every variable payhook needs, is in .env.example.
    example = dict(l.split("=", 1) for l in open(env_example).read().splitlines()
                   if l and not l.startswith("#") and "=" in l)
    raw_text = open(raw_path).read()
    for var in re.findall(r"\$\{(\w+)", raw_text):
        if var not in example:
            fail(f".env.example lacks {var}, which docker-compose.yml interpolates")
    for var in ("INGEST_ADDR", "INGEST_OPS_ADDR", "DATABASE_URL", "AMQP_URL", "GOCARDLESS_WEBHOOK_SECRET",
                "PAYSTACK_SECRET_KEY", "FLUTTERWAVE_SECRET_HASH", "PAYQI_WEBHOOK_SECRET", "PAYHOOK_ADMIN_TOKEN"):
        if var not in example:
            fail(f".env.example lacks {var}")
    for var in ("DATABASE_URL", "AMQP_URL"):
        host = {"DATABASE_URL": "@postgres:5432/", "AMQP_URL": "@rabbitmq:5672/"}[var]
        if host not in example.get(var, ""):
            fail(f".env.example {var} must point at the compose service ({host})")
    if f":{example.get('POSTGRES_PASSWORD')}@" not in example.get("DATABASE_URL", "") \
            or f"//{example.get('POSTGRES_USER')}:" not in example.get("DATABASE_URL", ""):
        fail(".env.example: DATABASE_URL's user and password differ from POSTGRES_USER/POSTGRES_PASSWORD")
    if f":{example.get('RABBITMQ_DEFAULT_PASS')}@" not in example.get("AMQP_URL", "") \
            or f"//{example.get('RABBITMQ_DEFAULT_USER')}:" not in example.get("AMQP_URL", ""):
        fail(".env.example: AMQP_URL's user and password differ from RABBITMQ_DEFAULT_USER/PASS")
    for k, v in example.items():
        if re.search(r"SECRET|PASSWORD|PASS$|TOKEN|_KEY|HASH", k) and "CHANGE-ME" not in v:
            fail(f".env.example {k} is not a CHANGE-ME placeholder")
        if v == "":
            fail(f".env.example {k} is empty (payhook refuses an empty secret list; comment the line out)")
    print("  checked: services, images, healthchecks, depends_on service_healthy, commands, ops addresses, "
          "Prometheus mounts, no literal secrets, .env.example complete and consistent")
    done("compose")


# ---------------------------------------------------------------------- compose-cluster ----
def mounts_of(service):
    """{target: source} of a service's volumes, long ({source, target}) or short (src:dst[:ro]) form."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out[str(v.get("target"))] = str(v.get("source"))
        else:
            parts = str(v).split(":")
            if len(parts) >= 2:
                out[parts[1]] = parts[0]
    return out


def compose_cluster(config_path, raw_path, env_example):
    cfg = yaml.safe_load(open(config_path))
    services = cfg.get("services", {})
    nodes = ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"]
    want = {"postgres-primary", "postgres-standby", *nodes, "ingest", "worker-1", "worker-2", "prometheus"}
    if set(services) != want:
        fail(f"services are {sorted(services)}, expected {sorted(want)}")
    hc_text = lambda s: " ".join(services.get(s, {}).get("healthcheck", {}).get("test", []))  # noqa: E731
    for name in services:
        if not hc_text(name):
            fail(f"service {name} has no healthcheck")
    # RabbitMQ: one image, fixed hostnames, one cookie, the cluster formation config on each.
    images = {services.get(n, {}).get("image") for n in nodes}
    m = re.fullmatch(r"rabbitmq:(\d+)\.(\d+).*-management", next(iter(images)) or "")
    if len(images) != 1 or not m or (int(m.group(1)), int(m.group(2))) < (3, 8):
        fail(f"RabbitMQ nodes: one management image >= 3.8 for all three, got {sorted(map(str, images))}")
    raw = yaml.safe_load(open(raw_path))
    raw_services = raw.get("services") or {}
    cookies = set()
    conf_dir = os.path.dirname(os.path.abspath(raw_path))
    for n in nodes:
        s = services.get(n, {})
        if s.get("hostname") != n:
            fail(f"{n}: hostname must be fixed to {n} (the node name rabbit@{n} names its data)")
        if "rabbitmq-diagnostics" not in hc_text(n):
            fail(f"{n}: healthcheck must use rabbitmq-diagnostics")
        # (PyYAML resolves the `<<: *rabbitmq` merge: the shared environment is in there.)
        env = raw_services.get(n, {}).get("environment") or {}
        cookies.add(str(env.get("RABBITMQ_ERLANG_COOKIE")))
        mounts = mounts_of(s)
        conf = mounts.get("/etc/rabbitmq/conf.d/20-cluster.conf")
        if not conf:
            fail(f"{n}: does not mount the cluster formation config at /etc/rabbitmq/conf.d/20-cluster.conf")
        elif os.path.exists(conf):
            text = open(conf).read()
            for other in nodes:
                if not re.search(rf"^cluster_formation\.classic_config\.nodes\.\d+\s*=\s*rabbit@{other}\s*$", text, re.M):
                    fail(f"{conf}: classic_config does not list rabbit@{other}")
            if not re.search(r"^cluster_partition_handling\s*=\s*pause_minority\s*$", text, re.M):
                fail(f"{conf}: cluster_partition_handling must be pause_minority")
        if "/var/lib/rabbitmq" not in mounts:
            fail(f"{n}: /var/lib/rabbitmq must be a volume")
    if len(cookies) != 1 or not re.fullmatch(r"\$\{RABBITMQ_ERLANG_COOKIE[^}]*\}", next(iter(cookies))):
        fail(f"the RabbitMQ nodes must share one Erlang cookie from .env (${{RABBITMQ_ERLANG_COOKIE}}), got {sorted(cookies)}")
    for n in nodes[1:]:
        if services.get(n, {}).get("depends_on", {}).get("rabbitmq-1", {}).get("condition") != "service_healthy":
            fail(f"{n} must start after rabbitmq-1 is healthy (it joins rabbitmq-1 at its first boot)")
    # PostgreSQL: primary + synchronous standby.
    for n in ("postgres-primary", "postgres-standby"):
        if not re.fullmatch(r"postgres:15(\..*)?(-.*)?", services.get(n, {}).get("image", "")):
            fail(f"{n}: image must be postgres:15")
        if "pg_isready" not in hc_text(n):
            fail(f"{n}: healthcheck must use pg_isready")
    if "pg_stat_wal_receiver" not in hc_text("postgres-standby"):
        fail("postgres-standby: its healthcheck must check that it streams (pg_stat_wal_receiver)")
    prim = services.get("postgres-primary", {})
    cmd = " ".join(prim.get("command") or [])
    for setting in ("wal_level=replica", "synchronous_commit=on", "wal_log_hints=on"):
        if setting not in cmd:
            fail(f"postgres-primary: command does not set {setting}")
    if "synchronous_standby_names" in cmd:
        fail("postgres-primary: synchronous_standby_names on the command line makes the first initialisation wait for a standby")
    mounts = mounts_of(prim)
    init = next((src for tgt, src in mounts.items() if tgt.startswith("/docker-entrypoint-initdb.d/")), None)
    standby_mounts = mounts_of(services.get("postgres-standby", {}))
    entry = services.get("postgres-standby", {}).get("entrypoint") or []
    script = next((src for tgt, src in standby_mounts.items() if tgt in entry), None)
    app = None
    if not script or not os.path.exists(script):
        fail(f"postgres-standby: its entrypoint script is not mounted ({entry})")
    else:
        text = open(script).read()
        m = re.search(r"pg_basebackup[^\n]*(\\\n[^\n]*)*application_name=(\w+)", text)
        if not m:
            fail(f"{script}: no pg_basebackup with an application_name")
        else:
            app = m.group(2)
        if "-R" not in text:
            fail(f"{script}: pg_basebackup must write the standby configuration (-R)")
    if not init or not os.path.exists(init):
        fail("postgres-primary: no init script mounted into /docker-entrypoint-initdb.d/")
    else:
        text = open(init).read()
        m = re.search(r"synchronous_standby_names\s*=\s*'([^']*)'", text)
        if not m or not app or app not in m.group(1):
            fail(f"{init}: synchronous_standby_names ({m.group(1) if m else None!r}) must name the standby's "
                 f"application_name ({app!r})")
        if "replication" not in text:
            fail(f"{init}: pg_hba.conf gets no replication line")
    if services.get("postgres-standby", {}).get("depends_on", {}).get("postgres-primary", {}).get("condition") != "service_healthy":
        fail("postgres-standby must depend on postgres-primary being healthy")
    # payhook: both addresses from .env, every backing service healthy first.
    infra = ["postgres-primary", "postgres-standby", *nodes]
    for name, port in (("ingest", "8081"), ("worker-1", "8082"), ("worker-2", "8082")):
        s = services.get(name, {})
        if f":{port}/" not in hc_text(name) or "/healthz" not in hc_text(name):
            fail(f"{name}: healthcheck must call /healthz on port {port}")
        deps = s.get("depends_on", {})
        for dep in infra:
            if not isinstance(deps, dict) or deps.get(dep, {}).get("condition") != "service_healthy":
                fail(f"{name} must depend on {dep} with condition service_healthy")
        if s.get("build", {}).get("dockerfile") != "deploy/Dockerfile":
            fail(f"{name} must build deploy/Dockerfile")
        cmd = s.get("command") or []
        exp = ["payhook-ingest"] if name == "ingest" else ["payhook-worker", "run"]
        if cmd != exp:
            fail(f"{name} command is {cmd}, expected {exp}")
    for w in ("worker-1", "worker-2"):
        if services.get(w, {}).get("environment", {}).get("WORKER_OPS_ADDR") != "0.0.0.0:8082":
            fail(f"{w}: WORKER_OPS_ADDR must be 0.0.0.0:8082")
    # Secrets: none written into the file; the addresses from .env.
    raw_text = open(raw_path).read()
    for key, var in (("DATABASE_URL", "CLUSTER_DATABASE_URL"), ("AMQP_URL", "CLUSTER_AMQP_URL")):
        if not re.search(rf"^\s+{key}: \$\{{{var}[:}}]", raw_text, re.M):
            fail(f"payhook's {key} must be ${{{var}}} from .env")
    for name, s in raw_services.items():
        env = s.get("environment") or {}
        if isinstance(env, list):
            env = dict((e.split("=", 1) + [""])[:2] for e in env)
        for k, v in env.items():
            if k == "<<":
                continue
            if re.search(r"SECRET|PASSWORD|PASS$|TOKEN|_KEY|HASH|COOKIE|DATABASE_URL|AMQP_URL", k) and not re.fullmatch(r"\$\{[^}]+\}", str(v)):
                fail(f"docker-compose.cluster.yml service {name}: {k} has a literal value; take it from .env")
    example = dict(l.split("=", 1) for l in open(env_example).read().splitlines()
                   if l and not l.startswith("#") and "=" in l)
    for var in re.findall(r"\$\{(\w+)", raw_text):
        if var not in example:
            fail(f".env.example lacks {var}, which docker-compose.cluster.yml interpolates")
    if "CHANGE-ME" not in example.get("RABBITMQ_ERLANG_COOKIE", ""):
        fail(".env.example RABBITMQ_ERLANG_COOKIE must be a CHANGE-ME placeholder")
    user, pw = example.get("POSTGRES_USER"), example.get("POSTGRES_PASSWORD")
    if example.get("CLUSTER_DATABASE_URL") != f"postgres://{user}:{pw}@postgres-primary:5432/payhook":
        fail(".env.example CLUSTER_DATABASE_URL must be postgres://POSTGRES_USER:POSTGRES_PASSWORD@postgres-primary:5432/payhook")
    ru, rp = example.get("RABBITMQ_DEFAULT_USER"), example.get("RABBITMQ_DEFAULT_PASS")
    want_amqp = ",".join(f"amqp://{ru}:{rp}@{n}:5672/%2f" for n in nodes)
    if example.get("CLUSTER_AMQP_URL") != want_amqp:
        fail(f".env.example CLUSTER_AMQP_URL must list the three nodes: {want_amqp}")
    print("  checked: 3 RabbitMQ nodes (one image, fixed hostnames, one cookie, classic_config listing all, "
          "pause_minority, staggered first boot), PostgreSQL primary + standby (pg_basebackup -R, "
          "synchronous_standby_names names the standby, streaming healthcheck), payhook depends on all, "
          "addresses and secrets only from .env, .env.example consistent")
    done("compose-cluster")


# --------------------------------------------------------------------------- dockerfile ----
def dockerfile(path, cargo_toml):
    text = open(path).read()
    # Join continuation lines, drop comments.
    lines, cur = [], ""
    for raw in text.splitlines():
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        cur += " " + s.rstrip("\\").strip()
        if not s.endswith("\\"):
            lines.append(cur.strip())
            cur = ""
    stages = [(i, l) for i, l in enumerate(lines) if l.upper().startswith("FROM ")]
    if len(stages) < 2:
        fail("expected a multi-stage build (builder + runtime)")
        done("dockerfile")
    args = {m.group(1): m.group(2) for l in lines for m in [re.match(r"ARG (\w+)=(\S+)", l)] if m}
    first = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), stages[0][1])
    if not re.match(r"FROM rust:[\w.]*-?bookworm AS builder", first, re.I):
        fail(f"first stage is {first!r}, expected rust:<version>-bookworm AS builder")
    last_from = stages[-1][1]
    if not re.match(r"FROM debian:bookworm-slim\b", last_from, re.I):
        fail(f"runtime stage is {last_from!r}, expected debian:bookworm-slim")
    build = [l for l in lines if l.startswith("RUN") and "cargo build" in l]
    if not build or "--release" not in build[0] or "--locked" not in build[0]:
        fail("the builder must run cargo build --release --locked")
    for b in ("payhook-ingest", "payhook-worker"):
        if not any(b in l for l in build):
            fail(f"the build does not name {b}")
        if not any(l.startswith("COPY --from=builder") for l in lines[stages[-1][0]:]):
            fail("the runtime stage copies nothing from the builder")
    runtime = lines[stages[-1][0]:]
    apt = " ".join(l for l in runtime if "apt-get install" in l)
    for pkg in ("ca-certificates", "curl"):
        if pkg not in apt:
            fail(f"the runtime image does not install {pkg}")
    if "--no-install-recommends" not in apt or "rm -rf /var/lib/apt/lists" not in apt:
        fail("apt-get install in the runtime stage: use --no-install-recommends and clean the lists")
    users = [l.split(None, 1)[1] for l in runtime if l.startswith("USER ")]
    if not users or users[-1].split(":")[0] in ("root", "0") or not users[-1].split(":")[0].isdigit():
        fail(f"the runtime stage must end as a numeric non-root USER (got {users})")
    exposed = {p for l in runtime if l.startswith("EXPOSE ") for p in l.split()[1:]}
    if not {"8080", "8081", "8082"} <= exposed:
        fail(f"EXPOSE must list 8080 8081 8082 (got {sorted(exposed)})")
    for l in lines:
        m = re.match(r"(ENV|ARG)\s+(.*)", l)
        if m and re.search(r"SECRET|PASSWORD|TOKEN|_KEY|HASH|DATABASE_URL|AMQP_URL", m.group(2)):
            fail(f"a secret-like variable is baked into the image: {l}")
    if re.search(r"COPY\s+(\S+\s+)*\.env\b", text):
        fail("the Dockerfile copies .env")
    # Every workspace member and migrations/ reach the builder.
    members = re.search(r"members\s*=\s*\[([^\]]*)\]", open(cargo_toml).read())
    members = re.findall(r'"([^"]+)"', members.group(1)) if members else []
    copied = " ".join(l for l in lines[:stages[-1][0]] if l.startswith("COPY"))
    for m in members + ["migrations", "Cargo.lock"]:
        if not re.search(rf"(^|\s){re.escape(m)}(\s|/|$)", copied):
            fail(f"the builder does not COPY {m}")
    print(f"  checked: stages {first.split()[1]} -> {last_from.split()[1]}, cargo build --release --locked, "
          f"members {members} + migrations copied, non-root USER {users[-1] if users else '?'}, "
          f"EXPOSE {' '.join(sorted(exposed))}, no secret in ENV/ARG")
    done("dockerfile")


# ------------------------------------------------------------------------ alerts-tested ----
def alerts_tested(alerts_path, tests_path):
    alerts = [r["alert"] for g in yaml.safe_load(open(alerts_path))["groups"] for r in g["rules"] if "alert" in r]
    firing, quiet = set(), set()
    for t in yaml.safe_load(open(tests_path)).get("tests", []):
        for a in t.get("alert_rule_test", []):
            (firing if a.get("exp_alerts") else quiet).add(a["alertname"])
    for a in alerts:
        if a not in firing:
            fail(f"alert {a} has no test where it fires")
        if a not in quiet:
            fail(f"alert {a} has no test where it stays quiet")
    for a in (firing | quiet) - set(alerts):
        fail(f"the tests name {a}, which alerts.yml does not define")
    print(f"  {len(alerts)} alerts, each tested firing and quiet")
    done("alerts-tested")


if __name__ == "__main__":
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "k8s":
        k8s(rest[0], rest[1:] or ["1.29.0", "1.37.0"])
    elif cmd == "k8s-cluster":
        k8s(rest[0], rest[1:] or ["1.29.0", "1.37.0"], cluster=True)
    elif cmd == "compose-cluster":
        compose_cluster(*rest)
    elif cmd == "dashboard":
        dashboard(*rest)
    elif cmd == "compose":
        compose(*rest)
    elif cmd == "dockerfile":
        dockerfile(*rest)
    elif cmd == "alerts-tested":
        alerts_tested(*rest)
    else:
        sys.exit(__doc__)
