"""The `trainserve` command: run the service, migrate the database, manage keys.

The worker is started as its own `celery` process, so this module (like the rest of app/)
never imports the workers' task code.
"""

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from app.config import get_settings
from app.db.engine import make_engine, make_sessionmaker, session_scope
from app.db.migrate import upgrade
from app.keys.service import any_owner, create_key, revoke_key

STOP_GRACE_SECONDS = 15


def _sessions():  # type: ignore[no-untyped-def]
    return make_sessionmaker(make_engine(get_settings()))


def cmd_db_upgrade(_: argparse.Namespace) -> int:
    upgrade()
    print("database is at the latest migration", file=sys.stderr)
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    with session_scope(_sessions()) as session:
        key = create_key(session, owner_name=args.name, admin=args.admin)
    print(key)
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    with session_scope(_sessions()) as session:
        count = revoke_key(session, prefix=args.prefix)
    if not count:
        print(f"no active key starts with {args.prefix!r}", file=sys.stderr)
        return 1
    print(f"revoked {count} key(s)", file=sys.stderr)
    return 0


def cmd_api(_: argparse.Namespace) -> int:
    import uvicorn  # only this command needs the server

    settings = get_settings()
    uvicorn.run("app.main:create_app", factory=True, host=settings.host, port=settings.port,
                log_level=settings.log_level.lower(), access_log=False)
    return 0


def worker_argv(queues: str, concurrency: int | None, pool: str) -> list[str]:
    settings = get_settings()
    return [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
            "--queues", queues, "--concurrency", str(concurrency or settings.worker_concurrency),
            "--pool", pool, "--loglevel", settings.log_level, "--without-gossip",
            "--without-mingle", "--hostname", f"trainserve-{queues.replace(',', '-')}@%h"]


def cmd_worker(args: argparse.Namespace) -> int:
    # Lets the parent ask whether CUDA exists without initialising it, which would leave
    # its forked training children unable to use the GPU.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    argv = worker_argv(args.queues, args.concurrency, args.pool)
    os.execv(argv[0], argv)
    return 1  # not reached


def cmd_up(args: argparse.Namespace) -> int:
    settings = get_settings()
    upgrade()
    with session_scope(_sessions()) as session:
        first_start = not any_owner(session)
        admin_key = create_key(session, owner_name="admin", admin=True) if first_start else None
    print(f"trainserve: API at http://{settings.host}:{settings.port} "
          f"(docs at /docs), data in {settings.data_dir}", flush=True)
    if admin_key:
        print(f"trainserve: admin API key (shown once, keep it): {admin_key}", flush=True)
    # Each child leads its own process group, so stopping reaches the worker's children too.
    children = [
        subprocess.Popen([sys.executable, "-m", "app.cli", "api"], start_new_session=True),
        subprocess.Popen(worker_argv(args.queues, None, "prefork"), start_new_session=True),
    ]

    def stop(*_: object) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()  # the leader only: Celery's warm shutdown stops its pool

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with contextlib.suppress(ChildProcessError):
        os.wait()  # the first child to end ends the service
    stop()
    for child in children:
        try:
            child.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            # A job still training is taken back by the reconciler once its lease expires.
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainserve", description="Train neural networks and serve their predictions. "
        "Settings come from TRAINSERVE_* environment variables (see the README).")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="migrate, then run the API and one worker together")
    up.add_argument("--queues", default="cpu", help="the worker's queues (default: cpu)")
    up.set_defaults(func=cmd_up)

    api = commands.add_parser("api", help="run the API alone")
    api.set_defaults(func=cmd_api)

    worker = commands.add_parser("worker", help="run one Celery worker")
    worker.add_argument("--queues", default="cpu", help="comma-separated: cpu, gpu")
    worker.add_argument("--concurrency", type=int, default=None,
                        help="worker children (default: TRAINSERVE_WORKER_CONCURRENCY)")
    worker.add_argument("--pool", default="prefork", choices=["prefork", "solo"],
                        help="Celery pool (default: prefork)")
    worker.set_defaults(func=cmd_worker)

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="apply migrations").set_defaults(func=cmd_db_upgrade)

    keys = commands.add_parser("keys", help="API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="print a new key as the only line on stdout")
    create.add_argument("name", help="the owner's name; created if new")
    create.add_argument("--admin", action="store_true", help="an admin key sees everything")
    create.set_defaults(func=cmd_keys_create)
    revoke = key_commands.add_parser("revoke", help="revoke keys by their first 10 characters")
    revoke.add_argument("prefix")
    revoke.set_defaults(func=cmd_keys_revoke)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
