#!/usr/bin/env bash
# Run the ingester end to end on this machine and show telemetry arriving.
#
# Brings up RabbitMQ (the machine's own, started if it is down) and a
# VictoriaMetrics store that speaks the InfluxDB v2 write API on
# 127.0.0.1:${QUICKSTART_STORE_PORT:-8428}, with its data in a temporary folder.
# On Debian or Ubuntu it installs rabbitmq-server and victoria-metrics when
# they are missing (as root, or through sudo). Then it starts the ingester,
# runs the fleet simulator for QUICKSTART_SECONDS (default 20), prints what
# the store contains per robot, and stops what it started.
#
# To use services you already run, set RABBITMQ_HOST (and RABBITMQ_PORT,
# RABBITMQ_USER, RABBITMQ_PASS, RABBITMQ_VHOST) and INFLUX_URL, INFLUX_TOKEN,
# INFLUX_ORG, INFLUX_BUCKET before you run it. With INFLUX_URL set, no local
# store is started and the read-back step is left to your InfluxDB UI.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=${QUICKSTART_SECONDS:-20}
store_port=${QUICKSTART_STORE_PORT:-8428}
started=()

log() { printf '[quickstart] %s\n' "$*"; }
fail() { log "$*"; exit 1; }

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

install_packages() {
  local missing=()
  for spec in "$@"; do
    local program=${spec%%:*} package=${spec##*:}
    PATH="$PATH:/usr/sbin:/sbin" command -v "$program" >/dev/null || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return
  if ! command -v apt-get >/dev/null; then
    log "missing ${missing[*]}: install them, or point the RABBITMQ_* and INFLUX_* variables at running services"
    exit 1
  fi
  log "installing ${missing[*]} with apt-get"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

cleanup() {
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${store_dir:-}" ] && rm -rf "$store_dir"
}
trap cleanup EXIT

# 1. RabbitMQ, unless the caller points at another broker.
if [ -z "${RABBITMQ_HOST:-}" ]; then
  install_packages rabbitmq-server:rabbitmq-server
  export PATH="$PATH:/usr/sbin:/sbin"
  if ! rabbitmqctl -q status >/dev/null 2>&1; then
    log "starting RabbitMQ"
    as_root rabbitmq-server -detached
    as_root rabbitmqctl -q await_startup
  fi
  export RABBITMQ_HOST=127.0.0.1
fi

# 2. A store with the InfluxDB v2 write API, unless the caller has one.
if [ -z "${INFLUX_URL:-}" ]; then
  install_packages victoria-metrics:victoria-metrics
  if port_in_use "$store_port"; then
    fail "port $store_port is in use; set QUICKSTART_STORE_PORT to a free port"
  fi
  store_dir=$(mktemp -d)
  PATH="$PATH:/usr/bin" victoria-metrics -httpListenAddr="127.0.0.1:$store_port" \
    -storageDataPath="$store_dir" -retentionPeriod=100y >"$store_dir/store.log" 2>&1 &
  store_pid=$!
  started+=("$store_pid")
  export INFLUX_URL="http://127.0.0.1:$store_port" INFLUX_TOKEN=quickstart-token
  for _ in $(seq 50); do curl -sf "$INFLUX_URL/health" >/dev/null && break; sleep 0.2; done
  kill -0 "$store_pid" 2>/dev/null || fail "VictoriaMetrics did not start: $(tail -n 3 "$store_dir/store.log")"
  log "VictoriaMetrics (InfluxDB v2 write API) at $INFLUX_URL"
fi

# 3. The ingester's Python environment.
[ -d .venv ] || python3 -m venv .venv
.venv/bin/pip install -q -r requirements.txt
python=.venv/bin/python

# 4. Ingester and simulator.
export HTTP_PORT=${HTTP_PORT:-8080}
if port_in_use "$HTTP_PORT"; then
  fail "port $HTTP_PORT is in use; set HTTP_PORT to a free port for the ingester's /metrics"
fi
ingester_log=$(mktemp)
$python ingester.py > >(tee "$ingester_log") 2>&1 &
ingester_pid=$!
started+=("$ingester_pid")
for _ in $(seq 100); do
  grep -q "Connected to RabbitMQ" "$ingester_log" && break
  kill -0 "$ingester_pid" 2>/dev/null || fail "the ingester exited; its log is above"
  sleep 0.1
done
grep -q "Connected to RabbitMQ" "$ingester_log" || fail "the ingester did not connect to RabbitMQ within 10 s"
log "ingester started; metrics on http://127.0.0.1:$HTTP_PORT/metrics"
log "the simulator makes every 50th message invalid on purpose, so a few 'ingest error' lines are expected"
$python ingester.py simulate --bots 5 --rate 2 --duration "$seconds" --bad-every 50

sleep 2
if [ -n "${store_dir:-}" ]; then
  curl -sf "$INFLUX_URL/internal/force_flush" >/dev/null
  log "battery_percentage samples stored per robot (each message also wrote other fields), latest value:"
  curl -sfg "$INFLUX_URL/api/v1/export?match[]=battery_percentage" | $python -c '
import json, sys
for line in sys.stdin:
    series = json.loads(line)
    bot, values = series["metric"]["bot"], series["values"]
    print(f"  {bot}: {len(values)} points, battery {values[-1]:.1f} %")
'
fi
log "ingester counters:"
curl -sf "http://127.0.0.1:$HTTP_PORT/metrics" | grep -E '^ingester_(messages_received|messages_written|points_written|dead_letters)_total' || true
kill -0 "$ingester_pid" 2>/dev/null || fail "the ingester exited early; its log is above"
log "invalid messages, if any, are in queue ${RABBITMQ_QUEUE:-turtlebot.telemetry}.dead;"
log "see them with: RABBITMQ_QUEUE=${RABBITMQ_QUEUE:-turtlebot.telemetry} .venv/bin/python ingester.py dead-letters list"
rm -f "$ingester_log"
