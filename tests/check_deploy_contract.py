"""Check the deployment files against the names and values the runbooks rely on.

Run from anywhere: ``python tests/check_deploy_contract.py``. Schema
validators (kubernetes-validate, check-jsonschema) only see one file at a
time. This script checks what crosses files: Secret and ConfigMap keys,
queue names and arguments, ports, image tags, the "restricted" Pod Security
Standard, and that the RabbitMQ files for compose and Kubernetes agree.
It prints one PASS or FAIL line per check and exits with status 1 if any
check fails. Needs PyYAML (installed by scripts/check-artifacts.sh).
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
MANIFEST = REPO_ROOT / "Metric-Collector-deploy.yaml"
KEDA_FILE = REPO_ROOT / "deploy/keda-scaledobject.yaml"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERFILE = REPO_ROOT / "Dockerfile"
RABBITMQ_CONF = REPO_ROOT / "deploy/rabbitmq/rabbitmq.conf"
RABBITMQ_DEFINITIONS = REPO_ROOT / "deploy/rabbitmq/definitions.json"

NAMESPACE = "tbot-monitoring"
INGESTER_IMAGE = "ketidevit2/rabbit-influx-ingester:0.9"
SIMULATOR_COMMAND = ["python3", "ingester.py", "simulate", "--bots", "10", "--rate", "1"]

# Values of ingester-config that other objects and the runbooks depend on.
EXPECTED_INGESTER_CONFIG = {
    "RABBITMQ_HOST": "metric-collector",
    "RABBITMQ_PORT": "5672",
    "RABBITMQ_VHOST": "/",
    "RABBITMQ_QUEUE": "turtlebot.telemetry",
    "DEAD_LETTER_QUEUE": "turtlebot.telemetry.dead",
    "DEAD_LETTER_MAX_LENGTH": "100000",
    "PREFETCH_COUNT": "20",
    "HTTP_PORT": "8080",
    "INFLUX_URL": "http://influxdb:8086",
    "INFLUX_ORG": "keti",
    "INFLUX_BUCKET": "turtlebot",
}
# Container environment variable -> (Secret name, key).
INGESTER_SECRET_ENV = {
    "RABBITMQ_USER": ("rabbitmq-creds", "user"),
    "RABBITMQ_PASS": ("rabbitmq-creds", "pass"),
    "INFLUX_TOKEN": ("influxdb-creds", "token"),
}
RABBITMQ_SECRET_ENV = {
    "RABBITMQ_DEFAULT_USER": ("rabbitmq-creds", "user"),
    "RABBITMQ_DEFAULT_PASS": ("rabbitmq-creds", "pass"),
}
INFLUXDB_SECRET_ENV = {
    "DOCKER_INFLUXDB_INIT_USERNAME": ("influxdb-creds", "username"),
    "DOCKER_INFLUXDB_INIT_PASSWORD": ("influxdb-creds", "password"),
    "DOCKER_INFLUXDB_INIT_ADMIN_TOKEN": ("influxdb-creds", "token"),
}

# Volume types the "restricted" Pod Security Standard allows.
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}
# Well-known sample passwords that must not appear in any deployment file.
SAMPLE_PASSWORDS = ["password123", "admin123", "changeme", "p@ssw0rd", "qwerty"]

# Kubernetes quantity suffixes: binary (Ki, Mi, ...) and decimal (k, M, ...).
MEMORY_UNITS = {
    "": 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4,
    "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
}
DOCKER_MEMORY_UNITS = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


class Report:
    """Printer of PASS/FAIL lines that counts passed and failed checks."""

    def __init__(self) -> None:
        self.failed = 0
        self.passed = 0

    def check(self, ok: bool, name: str, detail: str = "") -> bool:
        status = "PASS" if ok else "FAIL"
        print(f"{status} {name}" + (f": {detail}" if detail else ""))
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok

    def equal(self, name: str, actual, expected) -> bool:
        if actual == expected:
            text = repr(actual)
            return self.check(True, name, text if len(text) <= 100 else "equal")
        return self.check(False, name, f"found {actual!r}, expected {expected!r}")


# ------------------------------------------------------------------ helpers

def load_documents(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def find(documents: list[dict], kind: str, name: str) -> dict | None:
    for doc in documents:
        if doc.get("kind") == kind and doc.get("metadata", {}).get("name") == name:
            return doc
    return None


def kubernetes_memory_bytes(quantity: str) -> int:
    """Convert a Kubernetes memory quantity ("1Gi", "512M", "1073741824") to bytes."""
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(quantity))
    if not match:
        raise ValueError(f"invalid Kubernetes memory quantity {quantity!r}, expected a form such as 1Gi")
    return int(match.group(1)) * MEMORY_UNITS.get(match.group(2) or "", 1)


def docker_memory_bytes(quantity: str) -> int:
    """Convert a compose memory value ("1g", "512m") to bytes; Docker's units are powers of 1024."""
    match = re.fullmatch(r"(\d+)([bkmg])?", str(quantity).lower())
    if not match:
        raise ValueError(f"invalid compose memory value {quantity!r}, expected a form such as 1g")
    return int(match.group(1)) * DOCKER_MEMORY_UNITS[match.group(2) or "b"]


def conf_value(conf_text: str, key: str) -> str | None:
    """Return the value of `key = value` in a rabbitmq.conf text, or None."""
    match = re.search(rf"^\s*{re.escape(key)}\s*=\s*(\S+)", conf_text, re.MULTILINE)
    return match.group(1) if match else None


def secret_env(container: dict) -> dict[str, tuple[str, str]]:
    result = {}
    for variable in container.get("env", []):
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            result[variable["name"]] = (ref.get("name"), ref.get("key"))
    return result


def plain_env(container: dict) -> dict[str, str]:
    return {v["name"]: v.get("value") for v in container.get("env", []) if "value" in v}


def pod_templates(documents: list[dict]):
    """Yield (label, pod spec, pod labels) for every workload with a pod template."""
    for doc in documents:
        if doc.get("kind") in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            template = doc["spec"]["template"]
            label = f"{doc['kind']} {doc['metadata']['name']}"
            yield label, template["spec"], template.get("metadata", {}).get("labels", {})


def container_port(container: dict, port) -> int | None:
    """Resolve a probe or Service port (number or port name) to a number."""
    if isinstance(port, int):
        return port
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            return declared["containerPort"]
    return None


# ------------------------------------------------------------ Kubernetes

def check_namespace_and_secrets(report: Report, docs: list[dict]) -> None:
    secrets = [d["metadata"]["name"] for d in docs if d.get("kind") == "Secret"]
    report.check(not secrets, "manifest contains no Secret", f"found {secrets}" if secrets
                 else "Secrets are created with kubectl")

    namespace = find(docs, "Namespace", NAMESPACE)
    labels = (namespace or {}).get("metadata", {}).get("labels", {})
    report.equal(f"namespace {NAMESPACE} enforces Pod Security",
                 labels.get("pod-security.kubernetes.io/enforce"), "restricted")

    outside = [f"{d['kind']}/{d['metadata']['name']}" for d in docs
               if d.get("kind") != "Namespace" and d["metadata"].get("namespace") != NAMESPACE]
    report.check(not outside, f"every object is in namespace {NAMESPACE}",
                 f"outside: {outside}" if outside else f"{len(docs) - 1} objects")


def check_restricted_pods(report: Report, docs: list[dict]) -> None:
    for label, pod, _ in pod_templates(docs):
        problems = []
        pod_context = pod.get("securityContext", {})
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(flag):
                problems.append(f"{flag} is set")
        if pod_context.get("seccompProfile", {}).get("type") not in {"RuntimeDefault", "Localhost"}:
            problems.append("pod seccompProfile is not RuntimeDefault")
        for volume in pod.get("volumes", []):
            kinds = set(volume) - {"name"}
            if not kinds <= RESTRICTED_VOLUME_TYPES:
                problems.append(f"volume {volume['name']} has type {sorted(kinds)}")

        containers = pod.get("containers", []) + pod.get("initContainers", [])
        for container in containers:
            context = container.get("securityContext", {})
            name = container["name"]
            run_as_non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
            run_as_user = context.get("runAsUser", pod_context.get("runAsUser"))
            if run_as_non_root is not True:
                problems.append(f"{name}: runAsNonRoot is not true")
            if run_as_user == 0:
                problems.append(f"{name}: runAsUser is 0")
            if context.get("privileged"):
                problems.append(f"{name}: privileged")
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}: allowPrivilegeEscalation is not false")
            capabilities = context.get("capabilities", {})
            if "ALL" not in capabilities.get("drop", []):
                problems.append(f"{name}: capabilities.drop lacks ALL")
            added = set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}
            if added:
                problems.append(f"{name}: adds capabilities {sorted(added)}")
            for port in container.get("ports", []):
                if port.get("hostPort"):
                    problems.append(f"{name}: hostPort {port['hostPort']}")
        report.check(not problems, f"{label} meets the restricted Pod Security Standard",
                     "; ".join(problems) if problems else f"{len(containers)} container(s)")


def check_images(report: Report, docs: list[dict]) -> None:
    for label, pod, _ in pod_templates(docs):
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            image = container["image"]
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            report.check(bool(tag) and tag != "latest", f"{label} image {image} has a fixed tag")


def check_ingester_config(report: Report, docs: list[dict]) -> dict:
    config = find(docs, "ConfigMap", "ingester-config")
    data = (config or {}).get("data", {})
    report.check(config is not None, "ConfigMap ingester-config exists")
    for key, expected in EXPECTED_INGESTER_CONFIG.items():
        report.equal(f"ingester-config {key}", data.get(key), expected)
    report.check(data.get("LOG_FORMAT") in {"plain", "json"}, "ingester-config LOG_FORMAT is plain or json",
                 repr(data.get("LOG_FORMAT")))
    leaked = sorted(k for k in data if re.search(r"PASS|TOKEN|SECRET", k))
    report.check(not leaked, "ingester-config holds no credentials", f"found {leaked}" if leaked else "")
    return data


def check_ingester_deployment(report: Report, docs: list[dict], config: dict) -> None:
    deployment = find(docs, "Deployment", "metrics-ingester")
    if not report.check(deployment is not None, "Deployment metrics-ingester exists"):
        return
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    report.equal("metrics-ingester replicas", spec.get("replicas"), 1)
    report.equal("metrics-ingester selector", spec["selector"].get("matchLabels"), {"app": "ingester"})
    report.equal("metrics-ingester pod label app", spec["template"]["metadata"]["labels"].get("app"), "ingester")

    containers = {c["name"]: c for c in pod["containers"]}
    container = containers.get("ingester")
    if not report.check(container is not None, "metrics-ingester has container ingester", f"found {sorted(containers)}"):
        return
    report.equal("ingester image", container["image"], INGESTER_IMAGE)

    # 20 s is the ingester's default when the ConfigMap sets no SHUTDOWN_TIMEOUT_SECONDS.
    shutdown = int(config.get("SHUTDOWN_TIMEOUT_SECONDS", "20"))
    grace = pod.get("terminationGracePeriodSeconds")
    report.check(grace is not None and grace > shutdown, "terminationGracePeriodSeconds exceeds the drain timeout",
                 f"{grace} s, SHUTDOWN_TIMEOUT_SECONDS {shutdown} s")

    for probe_name, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        http = container.get(probe_name, {}).get("httpGet", {})
        port = container_port(container, http.get("port"))
        report.check(http.get("path") == path and port == 8080, f"ingester {probe_name} on {path} port 8080",
                     f"found {http.get('path')!r} port {port!r}")

    config_refs = [e.get("configMapRef", {}).get("name") for e in container.get("envFrom", [])]
    report.check("ingester-config" in config_refs, "ingester reads env from ConfigMap ingester-config",
                 f"envFrom {config_refs}")
    report.equal("ingester Secret env", secret_env(container), INGESTER_SECRET_ENV)

    resources = container.get("resources", {})
    report.check({"cpu", "memory"} <= set(resources.get("requests", {}))
                 and {"cpu", "memory"} <= set(resources.get("limits", {})),
                 "ingester has cpu and memory requests and limits", json.dumps(resources))
    report.equal("ingester readOnlyRootFilesystem",
                 container.get("securityContext", {}).get("readOnlyRootFilesystem"), True)
    report.equal("ingester runs as UID 10001",
                 container.get("securityContext", {}).get("runAsUser",
                                                          pod.get("securityContext", {}).get("runAsUser")), 10001)

    pinned_arch = "kubernetes.io/arch" in json.dumps(pod.get("nodeSelector", {})) + json.dumps(pod.get("affinity", {}))
    report.check(not pinned_arch, "ingester is not pinned to one CPU architecture")


def check_services(report: Report, docs: list[dict]) -> None:
    expected = {
        "metric-collector": {5672: None, 15672: 31672},
        "influxdb": {8086: 32086},
    }
    pods = {label: labels for label, _, labels in pod_templates(docs)}
    for name, ports in expected.items():
        service = find(docs, "Service", name)
        if not report.check(service is not None, f"Service {name} exists"):
            continue
        declared = {p["port"]: p.get("nodePort") for p in service["spec"]["ports"]}
        for port, node_port in ports.items():
            ok = port in declared and (node_port is None or declared[port] == node_port)
            report.check(ok, f"Service {name} port {port}" + (f" nodePort {node_port}" if node_port else ""),
                         f"declared {declared}")
        selector = service["spec"].get("selector", {})
        matched = [label for label, labels in pods.items() if selector.items() <= labels.items()]
        report.check(len(matched) == 1, f"Service {name} selects one workload", f"{selector} -> {matched}")


def check_rabbitmq(report: Report, docs: list[dict], config: dict) -> None:
    statefulsets = [d for d in docs if d.get("kind") == "StatefulSet"
                    and any(c["image"].startswith("rabbitmq:") for c in d["spec"]["template"]["spec"]["containers"])]
    if not report.check(len(statefulsets) == 1, "one RabbitMQ StatefulSet",
                        f"found {[s['metadata']['name'] for s in statefulsets]}"):
        return
    statefulset = statefulsets[0]
    spec = statefulset["spec"]
    container = next(c for c in spec["template"]["spec"]["containers"] if c["image"].startswith("rabbitmq:"))

    report.check(re.fullmatch(r"rabbitmq:3\.13\.\d+-management", container["image"]) is not None,
                 "RabbitMQ image is a pinned 3.13 management release", container["image"])
    headless = find(docs, "Service", spec.get("serviceName"))
    report.check(headless is not None and headless["spec"].get("clusterIP") == "None",
                 "RabbitMQ serviceName is a headless Service", repr(spec.get("serviceName")))
    report.check(bool(spec.get("volumeClaimTemplates")), "RabbitMQ has a volumeClaimTemplate")
    pod_context = spec["template"]["spec"].get("securityContext", {})
    report.check("fsGroup" not in pod_context or pod_context.get("fsGroupChangePolicy") == "OnRootMismatch",
                 "RabbitMQ fsGroup leaves the Erlang cookie mode alone",
                 f"fsGroupChangePolicy is {pod_context.get('fsGroupChangePolicy')!r}, and the cookie must stay readable by its owner only")

    env = plain_env(container)
    report.check("RABBITMQ_NODENAME" in env, "RabbitMQ node name is fixed", repr(env.get("RABBITMQ_NODENAME")))
    report.check("RABBITMQ_VM_MEMORY_HIGH_WATERMARK" not in env,
                 "RabbitMQ does not use the deprecated RABBITMQ_VM_MEMORY_HIGH_WATERMARK")
    report.equal("RabbitMQ Secret env", secret_env(container), RABBITMQ_SECRET_ENV)

    config_map = find(docs, "ConfigMap", "rabbitmq-config")
    data = (config_map or {}).get("data", {})
    conf_text = data.get("rabbitmq.conf", "")
    definitions_text = data.get("definitions.json", "{}")

    report.equal("rabbitmq.conf vm_memory_high_watermark.relative",
                 conf_value(conf_text, "vm_memory_high_watermark.relative"), "0.6")
    report.check(conf_value(conf_text, "load_definitions") is None,
                 "rabbitmq.conf does not set load_definitions",
                 "a node with definitions to load does not create RABBITMQ_DEFAULT_USER")
    override = conf_value(conf_text, "total_memory_available_override_value")
    limit = container.get("resources", {}).get("limits", {}).get("memory")
    report.check(override is not None and limit is not None and int(override) == kubernetes_memory_bytes(limit),
                 "rabbitmq.conf total memory equals the container memory limit",
                 f"{override} bytes vs limit {limit}")

    report.equal("rabbitmq.conf ConfigMap copy equals deploy/rabbitmq/rabbitmq.conf",
                 conf_text.strip(), RABBITMQ_CONF.read_text(encoding="utf-8").strip())
    definitions = json.loads(definitions_text)
    report.equal("definitions.json ConfigMap copy equals deploy/rabbitmq/definitions.json",
                 definitions, json.loads(RABBITMQ_DEFINITIONS.read_text(encoding="utf-8")))
    check_definitions(report, definitions, config)

    hook = " ".join(container.get("lifecycle", {}).get("postStart", {}).get("exec", {}).get("command", []))
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    definitions_path = f"{mounts.get('definitions', '<no definitions mount>')}/definitions.json"
    report.check("import_definitions" in hook and definitions_path in hook,
                 "RabbitMQ postStart hook imports the mounted definitions.json", definitions_path)


def check_definitions(report: Report, definitions: dict, config: dict) -> None:
    report.check({"name": "/"} in definitions.get("vhosts", []), "definitions declare vhost /")
    report.check(not definitions.get("users"), "definitions contain no users",
                 "the user comes from the rabbitmq-creds Secret")
    queues = {q["name"]: q for q in definitions.get("queues", [])}

    main_queue = queues.get(config.get("RABBITMQ_QUEUE"), {})
    report.check(main_queue.get("durable") is True and main_queue.get("arguments") == {}
                 and main_queue.get("vhost") == "/",
                 f"queue {config.get('RABBITMQ_QUEUE')} is durable with no arguments", json.dumps(main_queue))

    dead_queue = queues.get(config.get("DEAD_LETTER_QUEUE"), {})
    expected_arguments = {"x-max-length": int(config.get("DEAD_LETTER_MAX_LENGTH", "0")), "x-overflow": "drop-head"}
    report.check(dead_queue.get("durable") is True and dead_queue.get("vhost") == "/",
                 f"queue {config.get('DEAD_LETTER_QUEUE')} is durable", json.dumps(dead_queue))
    report.equal(f"queue {config.get('DEAD_LETTER_QUEUE')} arguments match the ingester's declaration",
                 dead_queue.get("arguments"), expected_arguments)


def check_influxdb(report: Report, docs: list[dict], config: dict) -> None:
    statefulset = find(docs, "StatefulSet", "influxdb")
    if not report.check(statefulset is not None, "StatefulSet influxdb exists"):
        return
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    report.check(re.fullmatch(r"influxdb:2\.7\.\d+", container["image"]) is not None,
                 "InfluxDB image is a pinned 2.7 release", container["image"])
    report.check(bool(statefulset["spec"].get("volumeClaimTemplates")), "InfluxDB has a volumeClaimTemplate")

    env = plain_env(container)
    report.equal("InfluxDB DOCKER_INFLUXDB_INIT_MODE", env.get("DOCKER_INFLUXDB_INIT_MODE"), "setup")
    report.check(bool(env.get("DOCKER_INFLUXDB_INIT_RETENTION")), "InfluxDB bucket retention is set",
                 repr(env.get("DOCKER_INFLUXDB_INIT_RETENTION")))
    report.equal("InfluxDB Secret env", secret_env(container), INFLUXDB_SECRET_ENV)

    config_env = {}
    for variable in container.get("env", []):
        ref = variable.get("valueFrom", {}).get("configMapKeyRef")
        if ref:
            config_env[variable["name"]] = (ref["name"], ref["key"])
    report.equal("InfluxDB org and bucket come from ingester-config", config_env, {
        "DOCKER_INFLUXDB_INIT_ORG": ("ingester-config", "INFLUX_ORG"),
        "DOCKER_INFLUXDB_INIT_BUCKET": ("ingester-config", "INFLUX_BUCKET"),
    })


# ------------------------------------------------------------------ KEDA

def check_keda(report: Report, config: dict) -> None:
    docs = load_documents(KEDA_FILE)
    scaled = next((d for d in docs if d.get("kind") == "ScaledObject"), None)
    if not report.check(scaled is not None, "KEDA file has a ScaledObject"):
        return
    spec = scaled["spec"]
    report.equal("ScaledObject namespace", scaled["metadata"].get("namespace"), NAMESPACE)
    report.equal("ScaledObject scales Deployment", spec["scaleTargetRef"].get("name"), "metrics-ingester")
    report.equal("ScaledObject minReplicaCount", spec.get("minReplicaCount"), 1)
    report.check(spec.get("maxReplicaCount", 0) > 1, "ScaledObject maxReplicaCount above 1",
                 repr(spec.get("maxReplicaCount")))

    triggers = [t for t in spec.get("triggers", []) if t.get("type") == "rabbitmq"]
    if not report.check(len(triggers) == 1, "ScaledObject has one rabbitmq trigger"):
        return
    trigger = triggers[0]
    report.equal("rabbitmq trigger queueName", trigger["metadata"].get("queueName"), config.get("RABBITMQ_QUEUE"))
    report.equal("rabbitmq trigger mode", trigger["metadata"].get("mode"), "QueueLength")
    report.check("@" not in trigger["metadata"].get("host", ""), "rabbitmq trigger host has no credentials")

    auth_name = trigger.get("authenticationRef", {}).get("name")
    auth = find(docs, "TriggerAuthentication", auth_name)
    refs = {r["parameter"]: (r["name"], r["key"]) for r in (auth or {}).get("spec", {}).get("secretTargetRef", [])}
    report.equal(f"TriggerAuthentication {auth_name} reads rabbitmq-creds", refs, {
        "username": ("rabbitmq-creds", "user"),
        "password": ("rabbitmq-creds", "pass"),
    })


# --------------------------------------------------------------- compose

def check_compose(report: Report) -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    services = compose.get("services", {})

    for name, service in services.items():
        for port in service.get("ports", []):
            report.check(str(port).startswith("127.0.0.1:"), f"compose {name} publishes {port} on 127.0.0.1 only")
        image = service.get("image", "")
        if image and "build" not in service:
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            report.check(bool(tag) and tag != "latest", f"compose {name} image {image} has a fixed tag")

        credentials = {key: value for key, value in service.get("environment", {}).items()
                       if re.search(r"PASS|TOKEN|SECRET", key)}
        literal = sorted(key for key, value in credentials.items() if not str(value).startswith("${"))
        if credentials:
            report.check(not literal, f"compose {name} takes credentials from variables",
                         f"literal values for {literal}" if literal else ", ".join(sorted(credentials)))

    report.check(re.fullmatch(r"rabbitmq:3\.13\.\d+-management", services.get("rabbitmq", {}).get("image", ""))
                 is not None, "compose RabbitMQ image is a pinned 3.13 management release")
    report.check(re.fullmatch(r"influxdb:2\.7\.\d+", services.get("influxdb", {}).get("image", "")) is not None,
                 "compose InfluxDB image is a pinned 2.7 release")
    report.equal("compose simulator command", services.get("simulator", {}).get("command"), SIMULATOR_COMMAND)
    report.check(services.get("ingester", {}).get("build") is not None, "compose builds the ingester from the Dockerfile")

    override = conf_value(RABBITMQ_CONF.read_text(encoding="utf-8"), "total_memory_available_override_value")
    mem_limit = services.get("rabbitmq", {}).get("mem_limit")
    report.check(override is not None and mem_limit is not None and int(override) == docker_memory_bytes(mem_limit),
                 "compose RabbitMQ mem_limit equals rabbitmq.conf total memory", f"{mem_limit} vs {override} bytes")

    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE_FILE.read_text(encoding="utf-8")))
    env_example = ENV_EXAMPLE.read_text(encoding="utf-8")
    defined = set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=", env_example, re.MULTILINE))
    report.check(used <= defined, ".env.example defines every variable compose uses",
                 f"missing {sorted(used - defined)}" if used - defined else f"{len(used)} variables")
    report.check("LOCAL-ONLY" in env_example.upper(), ".env.example marks its values as local-only")


# ----------------------------------------------------------- Dockerfile

def dockerfile_instructions() -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) pairs with line continuations joined."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        pending += stripped.rstrip("\\").strip() + " "
        if not stripped.endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            pending = ""
    return instructions


def check_dockerfile(report: Report) -> None:
    instructions = dockerfile_instructions()
    by_keyword: dict[str, list[str]] = {}
    for keyword, arguments in instructions:
        by_keyword.setdefault(keyword, []).append(arguments)

    base = by_keyword.get("FROM", [""])
    report.check(len(base) == 1 and re.fullmatch(r"python:3\.12\.\d+-slim(-\w+)?", base[0]) is not None,
                 "Dockerfile base is a python:3.12 slim image pinned to a patch release", repr(base))
    report.equal("Dockerfile USER", by_keyword.get("USER", [""])[-1].split(":")[0], "10001")
    report.equal("Dockerfile CMD", json.loads(by_keyword.get("CMD", ["[]"])[-1]), ["python3", "ingester.py"])
    report.equal("Dockerfile EXPOSE", by_keyword.get("EXPOSE"), ["8080"])

    environment = " ".join(by_keyword.get("ENV", []))
    for variable in ("PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1"):
        report.check(variable in environment, f"Dockerfile sets {variable}")

    installs = [a for a in by_keyword.get("RUN", []) if "pip install" in a]
    report.check(any("--no-cache-dir" in a and "-r requirements.txt" in a for a in installs),
                 "Dockerfile installs requirements.txt with --no-cache-dir", repr(installs))
    copies = [shlex.split(a)[:-1] for a in by_keyword.get("COPY", [])]
    sources = sorted(source.rstrip("/") for sources in copies for source in sources if not source.startswith("--"))
    report.equal("Dockerfile copies only the app files", sources,
                 ["ingester.py", "requirements.txt", "telemetry_ingester"])
    first_app_copy = next((i for i, (k, a) in enumerate(instructions)
                           if k == "COPY" and "requirements.txt" not in a), None)
    pip_step = next((i for i, (k, a) in enumerate(instructions) if k == "RUN" and "pip install" in a), None)
    report.check(None not in (pip_step, first_app_copy) and pip_step < first_app_copy,
                 "Dockerfile installs dependencies before copying the code",
                 "a code change keeps the dependency layer cached")


# ------------------------------------------------------- sample passwords

def check_sample_passwords(report: Report) -> None:
    files = [MANIFEST, KEDA_FILE, COMPOSE_FILE, ENV_EXAMPLE, DOCKERFILE, RABBITMQ_CONF, RABBITMQ_DEFINITIONS,
             *sorted((REPO_ROOT / "deploy").rglob("*.y*ml")), *sorted((REPO_ROOT / "deploy").rglob("*.json"))]
    readme = REPO_ROOT / "README.md"
    if readme.exists():
        files.append(readme)
    hits = []
    for path in sorted(set(files)):
        text = path.read_text(encoding="utf-8").lower()
        hits += [f"{path.relative_to(REPO_ROOT)}: {word}" for word in SAMPLE_PASSWORDS if word in text]
    report.check(not hits, "no well-known sample password in deployment files",
                 "; ".join(hits) if hits else f"{len(set(files))} files searched")


def main() -> int:
    report = Report()
    docs = load_documents(MANIFEST)

    check_namespace_and_secrets(report, docs)
    check_restricted_pods(report, docs)
    check_images(report, docs)
    config = check_ingester_config(report, docs)
    check_ingester_deployment(report, docs, config)
    check_services(report, docs)
    check_rabbitmq(report, docs, config)
    check_influxdb(report, docs, config)
    check_keda(report, config)
    check_compose(report)
    check_dockerfile(report)
    check_sample_passwords(report)

    print(f"check_deploy_contract: {report.passed} checks passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
