#!/usr/bin/env bash
# Offline checks of the deployment files: Dockerfile, Kubernetes manifests,
# docker-compose.yaml, Grafana provisioning and the dashboard.
#
# Usage, from any directory:
#   PYTHON=.venv/bin/python scripts/check-artifacts.sh
#
# PYTHON (default: python3) is the interpreter of the project environment.
# The script installs the pinned tools from requirements-checks.txt into that
# environment with pip, which needs the package index only when a tool is
# missing. KUBERNETES_VERSION (default: 1.34.0) selects the Kubernetes
# schemas that kubernetes-validate uses.
#
# Exit status: 0 when every check passes, 1 when a check fails, 3 when the
# tools cannot be installed. No Docker engine or cluster is needed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
KUBERNETES_VERSION="${KUBERNETES_VERSION:-1.34.0}"
MANIFEST=Metric-Collector-deploy.yaml
KEDA_FILE=deploy/keda-scaledobject.yaml

failed_checks=()

# Run one check, print PASS or FAIL with its name, and remember failures.
run_check() {
    local name=$1
    shift
    echo "==> ${name}"
    if "$@"; then
        echo "PASS ${name}"
    else
        echo "FAIL ${name}"
        failed_checks+=("${name}")
    fi
}

echo "==> installing check tools from requirements-checks.txt with ${PYTHON}"
if ! "${PYTHON}" -m pip install --quiet --disable-pip-version-check -r requirements-checks.txt; then
    echo "ERROR: pip could not install requirements-checks.txt into ${PYTHON}'s environment." >&2
    echo "Check that the package index is reachable, or install the file by hand." >&2
    exit 3
fi
scripts_dir="$("${PYTHON}" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"

# kubernetes-validate exits 0 and prints WARN for a kind it has no schema
# for. Any WARN line counts as a failure here, because every kind in the
# manifest is a built-in Kubernetes kind.
validate_manifest() {
    local output status=0
    output="$("${PYTHON}" -m kubernetes_validate --strict --kubernetes-version "${KUBERNETES_VERSION}" "${MANIFEST}")" || status=$?
    echo "${output}"
    if grep -q '^WARN' <<<"${output}"; then
        echo "kubernetes-validate found no schema for a kind listed above" >&2
        return 1
    fi
    return "${status}"
}

# Extract the shell scripts embedded in YAML (RabbitMQ postStart hook and the
# compose definitions import) so shellcheck can read them.
shellcheck_embedded_scripts() {
    local workdir status=0
    workdir="$(mktemp -d)"
    "${PYTHON}" - "${MANIFEST}" docker-compose.yaml "${workdir}" <<'PY'
import sys
from pathlib import Path

import yaml

manifest, compose, workdir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
for doc in yaml.safe_load_all(Path(manifest).read_text(encoding="utf-8")):
    if not doc or doc.get("kind") != "StatefulSet":
        continue
    for container in doc["spec"]["template"]["spec"]["containers"]:
        command = container.get("lifecycle", {}).get("postStart", {}).get("exec", {}).get("command", [])
        if command[:2] == ["/bin/sh", "-c"]:
            name = f"{doc['metadata']['name']}-{container['name']}-postStart.sh"
            (workdir / name).write_text("#!/bin/sh\n" + command[2], encoding="utf-8")
services = yaml.safe_load(Path(compose).read_text(encoding="utf-8"))["services"]
for service_name, service in services.items():
    command = service.get("command")
    if isinstance(command, list) and command[:2] == ["sh", "-c"]:
        # Compose replaces $$ with $ before the shell runs the command.
        script = command[2].replace("$$", "$")
        (workdir / f"compose-{service_name}.sh").write_text("#!/bin/sh\n" + script, encoding="utf-8")
PY
    for script in "${workdir}"/*.sh; do
        echo "shellcheck ${script##*/}"
        "${scripts_dir}/shellcheck" --shell=sh "${script}" || status=1
    done
    rm -rf "${workdir}"
    return "${status}"
}

run_check "kubernetes-validate ${MANIFEST} (Kubernetes ${KUBERNETES_VERSION}, strict)" validate_manifest
# KEDA's ScaledObject and TriggerAuthentication are custom resources, and
# kubernetes-validate ships no schemas for them. yamllint and
# tests/check_deploy_contract.py check that file instead.
echo "SKIP kubernetes-validate ${KEDA_FILE}: no KEDA CRD schemas in kubernetes-validate"

run_check "hadolint Dockerfile" "${scripts_dir}/hadolint" --no-color Dockerfile
run_check "yamllint (all YAML files, strict)" "${PYTHON}" -m yamllint --strict .
run_check "check-jsonschema docker-compose.yaml (vendor.compose-spec)" \
    "${PYTHON}" -m check_jsonschema --builtin-schema vendor.compose-spec docker-compose.yaml
run_check "shellcheck scripts/check-artifacts.sh" "${scripts_dir}/shellcheck" scripts/check-artifacts.sh
run_check "shellcheck scripts embedded in YAML" shellcheck_embedded_scripts
run_check "tests/check_dashboard.py" "${PYTHON}" tests/check_dashboard.py
run_check "tests/check_deploy_contract.py" "${PYTHON}" tests/check_deploy_contract.py

echo
if ((${#failed_checks[@]})); then
    echo "check-artifacts: ${#failed_checks[@]} check(s) failed:"
    printf '  %s\n' "${failed_checks[@]}"
    exit 1
fi
echo "check-artifacts: all checks passed"
