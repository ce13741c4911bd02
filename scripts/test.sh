#!/usr/bin/env bash
# Run the test suite against real RabbitMQ, VictoriaMetrics and InfluxDB 1.x.
#
# Usage: scripts/test.sh [pytest arguments...]
#
# Installs the Debian packages of the servers when their programs are missing
# (this needs root), starts RabbitMQ when 127.0.0.1:5672 is closed, prepares
# the virtual environment .venv and runs pytest. The exit status is pytest's.
# The tests start VictoriaMetrics and InfluxDB themselves and stop them again.
# RabbitMQ keeps running afterwards.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly RABBITMQ_PORT=5672
readonly RABBITMQ_START_TIMEOUT_SECONDS=90
readonly POLICY_RC_D=/usr/sbin/policy-rc.d

# Program that each Debian package installs.
declare -A PROGRAM_OF_PACKAGE=(
  [rabbitmq-server]=/usr/sbin/rabbitmq-server
  [victoria-metrics]=/usr/bin/victoria-metrics
  [influxdb]=/usr/bin/influxd
)

rabbitmq_port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$RABBITMQ_PORT") 2>/dev/null
}

# Make a freshly installed RabbitMQ listen on loopback only, with the same
# settings as the machines that come with it. Existing files are kept.
write_rabbitmq_loopback_config() {
  mkdir -p /etc/rabbitmq
  if [[ ! -e /etc/rabbitmq/rabbitmq.conf ]]; then
    echo "listeners.tcp.local = 127.0.0.1:$RABBITMQ_PORT" > /etc/rabbitmq/rabbitmq.conf
  fi
  if [[ ! -e /etc/rabbitmq/rabbitmq-env.conf ]]; then
    cat > /etc/rabbitmq/rabbitmq-env.conf <<'EOF'
NODENAME=rabbit@localhost
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
  fi
}

install_missing_packages() {
  local missing=() package
  for package in "${!PROGRAM_OF_PACKAGE[@]}"; do
    if [[ ! -x "${PROGRAM_OF_PACKAGE[$package]}" ]]; then
      missing+=("$package")
    fi
  done
  if (( ${#missing[@]} == 0 )); then
    return 0
  fi

  if (( EUID != 0 )); then
    echo "error: Debian packages missing: ${missing[*]}." \
      "Run this script as root, or install them with apt-get first." >&2
    exit 1
  fi
  echo "Installing missing Debian packages: ${missing[*]}"

  if [[ " ${missing[*]} " == *" rabbitmq-server "* ]]; then
    write_rabbitmq_loopback_config
  fi

  # Package scripts can start the new services with default settings that
  # listen on all interfaces. A policy-rc.d that exits 101 forbids that, and
  # the tests start the services they need themselves.
  local created_policy=false
  if [[ ! -e $POLICY_RC_D ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$POLICY_RC_D"
    chmod +x "$POLICY_RC_D"
    created_policy=true
    trap 'rm -f "$POLICY_RC_D"' EXIT
  fi

  # --force-confold keeps the RabbitMQ config written above.
  local apt_install=(apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confold)
  # Try the package lists that the machine already has, and refresh them only
  # when they are missing or out of date.
  if ! DEBIAN_FRONTEND=noninteractive "${apt_install[@]}" "${missing[@]}"; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive "${apt_install[@]}" "${missing[@]}"
  fi

  if [[ $created_policy == true ]]; then
    rm -f "$POLICY_RC_D"
    trap - EXIT
  fi
}

start_rabbitmq_if_down() {
  if rabbitmq_port_open; then
    return 0
  fi
  echo "RabbitMQ is not listening on 127.0.0.1:$RABBITMQ_PORT; starting it"
  /usr/sbin/rabbitmq-server -detached

  # The port check below decides whether the broker is up. await_startup
  # only saves polling, so its exit code is ignored.
  /usr/sbin/rabbitmqctl --timeout "$RABBITMQ_START_TIMEOUT_SECONDS" await_startup || true
  local deadline=$((SECONDS + RABBITMQ_START_TIMEOUT_SECONDS))
  until rabbitmq_port_open; do
    if (( SECONDS >= deadline )); then
      echo "error: RabbitMQ did not listen on 127.0.0.1:$RABBITMQ_PORT within" \
        "$RABBITMQ_START_TIMEOUT_SECONDS s. See /var/log/rabbitmq/." >&2
      exit 1
    fi
    sleep 1
  done
}

prepare_virtualenv() {
  if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
  fi
  .venv/bin/python -m pip install --quiet --disable-pip-version-check \
    -r requirements.txt -r requirements-dev.txt
}

install_missing_packages
start_rabbitmq_if_down
prepare_virtualenv

exec .venv/bin/python -m pytest "$@"
