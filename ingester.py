"""Start the TurtleBot telemetry ingester: ``python3 ingester.py [command]``."""

import sys

from telemetry_ingester.cli import main

if __name__ == "__main__":
    sys.exit(main())
