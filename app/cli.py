"""The `trainserve` command: run the service, migrate the database, manage keys, and (as
an HTTP client of a running API, see app/client.py) submit, watch and query jobs and models.

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
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

import migrations
from app import client as api
from app.keys.service import KEY_PREFIX, any_owner, create_key, list_keys, revoke_key
from core.broker import broker_problem, make_sender
from core.config import get_settings
from core.db.engine import make_engine, make_sessionmaker, session_scope
from core.db.migrate import upgrade
from core.lifecycle import JobStatus

MIGRATIONS = Path(migrations.__file__).parent

STOP_GRACE_SECONDS = 15
READY_TIMEOUT_SECONDS = 120
READY_SETTLE_SECONDS = 0.5  # the worker's last start-up lines follow its broker connection


def _sessions():  # type: ignore[no-untyped-def]
    return make_sessionmaker(make_engine(get_settings()))


def cmd_db_upgrade(_: argparse.Namespace) -> int:
    upgrade(MIGRATIONS)
    print("database is at the latest migration", file=sys.stderr)
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    with session_scope(_sessions()) as session:
        key = create_key(session, owner_name=args.name, admin=args.admin)
    print(key)
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    with session_scope(_sessions()) as session:
        count = revoke_key(session, which=args.key)
    # A whole key is never echoed back: its prefix says which one was meant.
    whole = args.key.startswith(KEY_PREFIX) and len(args.key) > 10
    shown = args.key[:10] + "..." if whole else args.key
    if not count:
        print(f"no active key matches {shown!r}: give the whole key, its first 10 characters "
              "(as `keys list` shows them) or its owner's name", file=sys.stderr)
        return 1
    print(f"revoked {count} key(s) matching {shown!r}", file=sys.stderr)
    return 0


def cmd_keys_list(_: argparse.Namespace) -> int:
    with session_scope(_sessions()) as session:
        rows = list_keys(session)
    print(f"{'PREFIX':<12}{'OWNER':<20}{'ROLE':<7}{'CREATED':<22}{'LAST USED':<22}REVOKED")
    for key, owner in rows:
        when = [f"{t:%Y-%m-%d %H:%M:%S}" if t else "-"
                for t in (key.created_at, key.last_used_at, key.revoked_at)]
        role = "admin" if owner.is_admin else "owner"
        print(f"{key.prefix:<12}{owner.name[:19]:<20}{role:<7}{when[0]:<22}{when[1]:<22}"
              f"{when[2]}")
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
    with session_scope(_sessions()) as session:
        first_start = not any_owner(session)
        admin_key = create_key(session, owner_name="admin", admin=True) if first_start else None
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


def _client_command(run: Callable[[api.ApiClient, argparse.Namespace], int]
                    ) -> Callable[[argparse.Namespace], int]:
    """A client command's errors (a refusal, an unreachable API) as one line and exit 1."""
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return int(run(api.ApiClient.from_env(), args))
        except api.ClientError as exc:
            print(f"trainserve: {exc}", file=sys.stderr)
            return 1
    return wrapped


def _watch(client: api.ApiClient, job_id: str) -> int:
    final = api.watch(client, job_id)
    print(f"{job_id} {final['status']}" + (f" model {final['model_id']}"
          if final.get("model_id") else "") + (f": {final['error']}" if final.get("error")
                                                 else ""))
    return 0 if final["status"] == JobStatus.SUCCEEDED else 1


def cmd_jobs_submit(client: api.ApiClient, args: argparse.Namespace) -> int:
    job = client.request("POST", "/v1/jobs", json=api.load_spec(args.spec))
    print(job["id"])
    return _watch(client, job["id"]) if args.watch else 0


def cmd_jobs_list(client: api.ApiClient, args: argparse.Namespace) -> int:
    params = {name: value for name, value in (("limit", args.limit), ("status", args.status))
              if value is not None}
    page = client.request("GET", "/v1/jobs", params=params)
    print(api.dumps(page) if args.json else api.job_table(page["items"]))
    return 0


def cmd_jobs_get(client: api.ApiClient, args: argparse.Namespace) -> int:
    print(api.dumps(client.request("GET", f"/v1/jobs/{args.id}")))
    return 0


def cmd_jobs_watch(client: api.ApiClient, args: argparse.Namespace) -> int:
    return _watch(client, args.id)


def cmd_jobs_cancel(client: api.ApiClient, args: argparse.Namespace) -> int:
    job = client.request("POST", f"/v1/jobs/{args.id}/cancel")
    running = job["status"] == JobStatus.RUNNING
    print(f"{job['id']} {job['status']}" + (" (cancel requested)" if running else ""))
    return 0


def cmd_models_predict(client: api.ApiClient, args: argparse.Namespace) -> int:
    body = api.predict_body(args.text, args.top_k)
    print(api.dumps(client.request("POST", f"/v1/models/{args.id}/predict", json=body)))
    return 0


def cmd_models_generate(client: api.ApiClient, args: argparse.Namespace) -> int:
    prompt = args.prompt
    if prompt is None:  # the model's first vocabulary character: any prompt must be in it
        prompt = client.request("GET", f"/v1/models/{args.id}")["info"]["vocab"][0]
    body = {"prompt": prompt, "max_chars": args.max_chars, "temperature": args.temperature,
            "top_k": args.top_k, "seed": args.seed}
    print(client.request("POST", f"/v1/models/{args.id}/generate", json=body)["text"])
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
    revoke = key_commands.add_parser(
        "revoke", help="revoke a key, given whole or by its first 10 characters, or every key "
        "of an owner, given by name")
    revoke.add_argument("key", help="the whole key, its first 10 characters, or an owner's name")
    revoke.set_defaults(func=cmd_keys_revoke)
    key_commands.add_parser("list", help="every key's prefix, owner, role and last use (the "
                            "keys themselves are not stored)").set_defaults(func=cmd_keys_list)
    _client_parsers(commands)
    return parser


def _client_parsers(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    where = " (a client of the API at TRAINSERVE_URL, with TRAINSERVE_API_KEY)"
    jobs = commands.add_parser("jobs", help="submit, list, watch and cancel jobs" + where)
    job_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    submit = job_commands.add_parser("submit", help="submit a spec; prints the job id")
    submit.add_argument("spec", help="a job spec file, .json or .yaml (- for stdin)")
    submit.add_argument("--watch", action="store_true", help="then show its progress")
    submit.set_defaults(func=_client_command(cmd_jobs_submit))
    list_ = job_commands.add_parser("list", help="jobs, newest first")
    list_.add_argument("--status", choices=[status.value for status in JobStatus])
    list_.add_argument("--limit", type=int, help="jobs per page (the API's default if unset)")
    list_.add_argument("--json", action="store_true", help="the API's JSON, not a table")
    list_.set_defaults(func=_client_command(cmd_jobs_list))
    for name, func, text in (
            ("get", cmd_jobs_get, "print a job as JSON"),
            ("watch", cmd_jobs_watch, "a progress bar (epoch, loss, ETA) until the job ends; "
             "exit 0 if it succeeded"),
            ("cancel", cmd_jobs_cancel, "cancel a queued or running job")):
        command = job_commands.add_parser(name, help=text)
        command.add_argument("id", help="the job's id")
        command.set_defaults(func=_client_command(func))

    models = commands.add_parser("models", help="ask trained models" + where)
    model_commands = models.add_subparsers(dest="models_command", required=True)
    predict = model_commands.add_parser(
        "predict", help="next characters after TEXT, or classes for a JSON list of inputs")
    predict.add_argument("id", help="the model's id")
    predict.add_argument("text", help="text, or a JSON list: one example or a list of them")
    predict.add_argument("--top-k", type=int, default=3)
    predict.set_defaults(func=_client_command(cmd_models_predict))
    generate = model_commands.add_parser("generate", help="sample text from a character model")
    generate.add_argument("id", help="the model's id")
    generate.add_argument("--prompt", help="default: the first character of its vocabulary")
    generate.add_argument("--max-chars", type=int, default=200)
    generate.add_argument("--temperature", type=float, default=1.0)
    generate.add_argument("--top-k", type=int, default=None)
    generate.add_argument("--seed", type=int, default=None, help="the same seed, the same text")
    generate.set_defaults(func=_client_command(cmd_models_generate))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
