"""The `trainserve` command: run the service, migrate the database, manage keys, and (as
an HTTP client of a running API, see app/client.py) submit, watch and query jobs and models.

server.py runs the service (up, api, worker, db), keys.py manages API keys in the database,
gc.py removes stored objects no row refers to, remote.py talks to a running API (jobs,
models), and so does sweeps.py (sweeps). The worker
is started as its own `celery` process, so this package (like the rest of app/) never imports
the workers' task code.
"""

import argparse
from collections.abc import Sequence

from app.cli import gc, keys, remote, server, sweeps


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainserve", description="Train neural networks and serve their predictions. "
        "Settings come from TRAINSERVE_* environment variables (see the README).")
    commands = parser.add_subparsers(dest="command", required=True)
    server.add_parsers(commands)
    keys.add_parsers(commands)
    gc.add_parsers(commands)
    remote.add_parsers(commands)
    sweeps.add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
