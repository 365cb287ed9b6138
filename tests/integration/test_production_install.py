"""The production install, as the Dockerfile makes it (`pip install -c constraints.txt .`, no
extras), on PostgreSQL and Redis: migrate, API, worker, the seed's hihello job, a prediction.

`make test` builds that venv (.venv-prod) and names it in TRAINSERVE_TEST_PROD_VENV. The
suite's own venv has the test extras, which bring in packages the production install may
lack (as `packaging` once was, for kombu's Redis transport): this test runs nothing of
this venv's, only the installed `trainserve` command, from a folder without the source.
"""

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.private_servers import PrivateRedis
from tests.integration.service import (
    create_database,
    free_port,
    poll,
    postgres_reachable,
    redis_reachable,
)
from tests.integration.specs import SEED_LSTM

VENV_VARIABLE = "TRAINSERVE_TEST_PROD_VENV"


def _required(message: str) -> None:
    if os.environ.get("TRAINSERVE_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def prod_venv() -> Path:
    named = os.environ.get(VENV_VARIABLE)
    if not named:
        _required(f"{VENV_VARIABLE} is not set (make test builds .venv-prod and sets it)")
    venv = Path(str(named))
    if not (venv / "bin" / "trainserve").is_file():
        pytest.fail(f"{VENV_VARIABLE}={venv} holds no installed trainserve")
    return venv


@pytest.fixture
def prod_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh database on the machine's PostgreSQL and a Redis server of the test's own
    (Debian's redis-server): the suite's session services consume the `cpu` queue of the
    shared Redis, and would take this test's messages for jobs of theirs."""
    missing = [name for name, ok in (("PostgreSQL", postgres_reachable()),
                                     ("Redis", redis_reachable())) if not ok]
    if missing:
        _required(f"{' and '.join(missing)} unreachable")
    broker = PrivateRedis(free_port())
    broker.start()
    database_url, drop = create_database("trainserve_prod")
    # Nothing of the test run's Python leaks in: no PYTHONPATH, no other TRAINSERVE_*.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TRAINSERVE_", "PYTHON", "VIRTUAL_ENV"))}
    env.update({"TRAINSERVE_DATABASE_URL": database_url, "TRAINSERVE_BROKER_URL": broker.url,
                "TRAINSERVE_DATA_DIR": str(tmp_path / "data"),
                "TRAINSERVE_PORT": str(free_port()), "PYTHONUNBUFFERED": "1",
                # One torch thread: the tiny LSTM gains nothing from more, and on a busy
                # machine their spin-waits cost it several times its run time.
                "TRAINSERVE_WORKER_THREADS": "1"})
    try:
        yield env
    finally:
        drop()
        broker.stop()


def test_the_dockerfile_install_trains_and_serves_on_postgres_and_redis(
        prod_venv: Path, prod_env: dict[str, str], tmp_path: Path) -> None:
    trainserve = str(prod_venv / "bin" / "trainserve")

    def run(*args: str) -> str:
        done = subprocess.run([trainserve, *args], env=prod_env, cwd=tmp_path, text=True,
                              capture_output=True, timeout=120)
        assert done.returncode == 0, f"trainserve {' '.join(args)}: {done.stderr[-3000:]}"
        return done.stdout

    # The code under test is the installed copy, not this checkout.
    where = subprocess.run([str(prod_venv / "bin" / "python"), "-c",
                            "import app; print(app.__file__)"], env=prod_env, cwd=tmp_path,
                           text=True, capture_output=True, check=True).stdout
    assert where.startswith(str(prod_venv)), where

    run("db", "upgrade")
    key = run("keys", "create", "operator", "--admin").strip()
    with _api_and_worker(trainserve, prod_env, tmp_path) as alive_and:
        base_url = f"http://127.0.0.1:{prod_env['TRAINSERVE_PORT']}"

        def ready() -> bool:
            try:
                return alive_and(httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200)
            except httpx.HTTPError:
                return alive_and(False)
        poll(ready, timeout=90, interval=0.2, what="the API to be ready")
        _train_and_predict(base_url, key, alive_and)


@contextlib.contextmanager
def _api_and_worker(trainserve: str, env: dict[str, str], cwd: Path
                    ) -> Iterator[Callable[[bool], bool]]:
    """The installed API and one cpu worker, each leading its own process group, stopped on
    the way out. Yields alive_and(check): `check`, once every process is seen running; a
    process that exited fails the test with the end of its log."""
    processes: dict[str, subprocess.Popen[bytes]] = {}
    logs = {name: cwd / f"{name}.log" for name in ("api", "worker")}

    def alive_and(check: bool) -> bool:
        for name, process in processes.items():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited: {logs[name].read_text()[-3000:]}")
        return check

    try:
        for name, args in (("api", ["api"]), ("worker", ["worker", "--queues", "cpu"])):
            with open(logs[name], "wb") as log:
                processes[name] = subprocess.Popen(
                    [trainserve, *args], env=env, cwd=cwd, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True)
        yield alive_and
    finally:
        _stop(list(processes.values()))


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every group still running, then SIGKILL to any that outlives its grace."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _train_and_predict(base_url: str, key: str, alive_and: Callable[[bool], bool]) -> None:
    """The seed's hihello job trains to success and its model predicts "ihello"."""
    with httpx.Client(base_url=base_url, timeout=30,
                      headers={"Authorization": f"Bearer {key}"}) as client:
        submitted = client.post("/v1/jobs", json=SEED_LSTM)
        assert submitted.status_code == 202, submitted.text

        def finished() -> dict[str, object] | None:
            job = client.get(f"/v1/jobs/{submitted.json()['id']}").json()
            return job if alive_and(job["status"] not in ("queued", "running")) else None
        job = poll(finished, timeout=180, interval=0.2, what="the hihello job to end")
        assert job["status"] == "succeeded", job
        answer = client.post(f"/v1/models/{job['model_id']}/predict",
                             json={"text": "hihell", "top_k": 3})
        assert answer.status_code == 200, answer.text
        assert answer.json()["sequence"] == "ihello"
