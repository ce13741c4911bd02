"""Start the TurtleBot telemetry ingester: ``python3 ingester.py [command]``."""

import sys

from telemetry_ingester.cli import main

# Third-party packages from requirements.txt, imported only when a command needs them.
REQUIRED_PACKAGES = ("pika", "influxdb_client", "prometheus_client", "urllib3")

if __name__ == "__main__":
    try:
        sys.exit(main())
    except ModuleNotFoundError as error:
        if error.name not in REQUIRED_PACKAGES:
            raise
        sys.exit(
            f"Cannot start: the Python package {error.name!r} is missing. Install the "
            "requirements first: python3 -m pip install -r requirements.txt"
        )
