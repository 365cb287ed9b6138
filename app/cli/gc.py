"""`trainserve gc`: remove stored objects that no row refers to (core/gc.py)."""

import argparse
import json

from app.datasets.uploads import sweep_incoming
from core import gc
from core.config import get_settings
from core.db.engine import make_engine, make_sessionmaker
from core.store import open_store


def cmd_gc(args: argparse.Namespace) -> int:
    settings = get_settings()
    sessions = make_sessionmaker(make_engine(settings))
    with sessions() as session:
        found = gc.collect(session, open_store(settings), grace_seconds=args.grace_seconds,
                           dry_run=args.dry_run)
    parts = 0 if args.dry_run else sweep_incoming(settings, args.grace_seconds)
    # One JSON line, like the benchmarks: what was (or, with --dry-run, would be) removed.
    print(json.dumps({"dry_run": args.dry_run, "objects": len(found.objects),
                      "bytes": found.bytes, "incomplete_uploads": found.incomplete,
                      "upload_parts": parts, "keys": found.objects}))
    return 0


def add_parsers(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = commands.add_parser(
        "gc", help="remove stored objects that no row refers to, incomplete uploads and this "
        "host's abandoned upload parts, all older than the grace age")
    parser.add_argument("--grace-seconds", type=float, default=gc.GRACE_SECONDS,
                        help="leave anything younger alone: a write in flight puts its object "
                        "before it records its row (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="list, remove nothing")
    parser.set_defaults(func=cmd_gc)
