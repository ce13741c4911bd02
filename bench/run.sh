#!/usr/bin/env bash
# Run the ingester benchmark and update docs/benchmarks.md and docs/benchmarks.ko.md.
#
# Usage: bash bench/run.sh [bench/run.py options, see --help]
#
# Creates the virtual environment .venv when it is missing and installs
# bench/requirements.txt into it. Needs the Debian packages rabbitmq-server
# and victoria-metrics (scripts/test.sh installs both). bench/run.py starts
# RabbitMQ when 127.0.0.1:5672 is closed and starts its own VictoriaMetrics
# on loopback for each measurement.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

for program in victoria-metrics rabbitmq-server; do
  if ! command -v "$program" >/dev/null && ! PATH=/usr/sbin:/usr/bin command -v "$program" >/dev/null; then
    echo "error: $program is not installed. Install the Debian package $program," \
      "or run scripts/test.sh once, which installs it." >&2
    exit 1
  fi
done

if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt

exec .venv/bin/python bench/run.py "$@"
