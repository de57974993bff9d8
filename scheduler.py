"""Daemon entry point: `python scheduler.py [--config F] [--db F] [--once] [--log-level L]`.
The same as `aggregator run`."""

import sys

from aggregator.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
