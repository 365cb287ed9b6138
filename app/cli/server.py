"""`trainserve up`, `api`, `worker` and `db`: run the service and migrate its database.

The worker is started as its own `celery` process, so this module (like the rest of app/)
never imports the workers' task code.
"""

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

import migrations
from app.cli.keys import first_admin_key
from core.broker import broker_problem, make_sender
from core.config import get_settings
from core.db.migrate import upgrade

MIGRATIONS = Path(migrations.__file__).parent

STOP_GRACE_SECONDS = 15
READY_TIMEOUT_SECONDS = 120
READY_SETTLE_SECONDS = 0.5  # the worker's last start-up lines follow its broker connection


def cmd_db_upgrade(_: argparse.Namespace) -> int:
    upgrade(MIGRATIONS)
    print("database is at the latest migration", file=sys.stderr)
    return 0


def cmd_api(_: argparse.Namespace) -> int:
    import uvicorn  # only this command needs the server

    settings = get_settings()
    uvicorn.run("app.main:create_app", factory=True, host=settings.host, port=settings.port,
                log_level=settings.log_level.lower(), access_log=False)
    return 0


def worker_argv(queues: str, concurrency: int | None, pool: str,
                quiet: bool = False) -> list[str]:
    settings = get_settings()
    # --quiet: no banner (`trainserve up` prints its own two lines, which it would bury).
    return [sys.executable, "-m", "celery", "-A", "workers.celery_app",
            *(["--quiet"] if quiet else []), "worker",
            "--queues", queues, "--concurrency", str(concurrency or settings.worker_concurrency),
            "--pool", pool, "--loglevel", settings.log_level, "--without-gossip",
            "--without-mingle", "--hostname", f"trainserve-{queues.replace(',', '-')}@%h"]


def cmd_worker(args: argparse.Namespace) -> int:
    # A broker that cannot be loaded or reached is said in one line, not a Celery traceback
    # (or minutes of Celery's retries at start); a supervisor restarts the worker later.
    problem = broker_problem(make_sender(get_settings()))
    if problem:
        print(f"trainserve worker: cannot start: {problem}", file=sys.stderr)
        return 1
    # Lets the parent ask whether CUDA exists without initialising it, which would leave
    # its forked training children unable to use the GPU.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    argv = worker_argv(args.queues, args.concurrency, args.pool)
    os.execv(argv[0], argv)
    return 1  # not reached


def cmd_up(args: argparse.Namespace) -> int:
    settings = get_settings()
    upgrade(MIGRATIONS)
    admin_key = first_admin_key()
    # Each child leads its own process group, so stopping reaches the worker's children too.
    children = [
        subprocess.Popen([sys.executable, "-m", "app.cli", "api"], start_new_session=True),
        subprocess.Popen(worker_argv(args.queues, None, "prefork", quiet=True),
                         start_new_session=True),
    ]
    # The two lines a newcomer needs come after the children's start-up lines, not above
    # them where they would scroll away.
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    _wait_ready(f"http://{host}:{settings.port}/readyz", children)
    print(f"trainserve: API at http://{settings.host}:{settings.port} "
          f"(docs at /docs), data in {settings.data_dir}", flush=True)
    if admin_key:
        print(f"trainserve: admin API key (shown once, keep it): {admin_key}", flush=True)

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


def _wait_ready(url: str, children: list[subprocess.Popen[bytes]],
                timeout: float = READY_TIMEOUT_SECONDS) -> bool:
    """Until the API answers ready and the worker had a moment to say it is, or a child
    ended, or the timeout passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(c.poll() is None for c in children):
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                time.sleep(READY_SETTLE_SECONDS)
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def add_parsers(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
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
