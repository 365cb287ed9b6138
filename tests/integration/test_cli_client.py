"""`trainserve jobs ...` and `trainserve models ...`: the CLI as a client of a running API."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.service import Service, poll
from tests.integration.specs import long_lstm
from tests.integration.test_serving import trained

pytestmark = pytest.mark.sqlite_only  # nothing here differs by backend


def run(service: Service, *args: str, key: str | None = "alice",
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**service.env, "TRAINSERVE_URL": service.base_url}
    env.pop("TRAINSERVE_API_KEY", None)
    if key:
        env["TRAINSERVE_API_KEY"] = service.keys[key]
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=300)


def test_watch_draws_a_bar_to_100_percent(service: Service, tmp_path: Path) -> None:
    spec = {"name": "cli-lstm", "dataset": "builtin:hihello",
            "model": {"arch": "lstm", "hidden_size": 5}, "optimizer": {"name": "adam", "lr": 0.1},
            "training": {"epochs": 300, "batch_size": 1, "seq_len": 6}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    submitted = run(service, "jobs", "submit", str(path))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert len(job_id.splitlines()) == 1

    watched = run(service, "jobs", "watch", job_id)
    assert watched.returncode == 0, watched.stderr
    frames = [f for f in watched.stderr.replace("\n", "\r").split("\r") if f.strip()]
    assert frames, watched.stderr
    assert "100%" in frames[-1] and "epoch 300/300" in frames[-1], frames[-1]
    assert "loss " in frames[-1] and "ETA 00:00" in frames[-1]
    assert "[" + "#" * 30 + "]" in frames[-1]
    assert watched.stdout.startswith(f"{job_id} succeeded model ")

    listed = run(service, "jobs", "list")
    assert listed.returncode == 0 and job_id in listed.stdout
    assert listed.stdout.splitlines()[0].split()[:3] == ["ID", "STATUS", "PROGRESS"]
    as_json = json.loads(run(service, "jobs", "list", "--json").stdout)
    assert job_id in [j["id"] for j in as_json["items"]]
    got = json.loads(run(service, "jobs", "get", job_id).stdout)
    assert got["status"] == "succeeded" and got["name"] == "cli-lstm"

    predicted = run(service, "models", "predict", got["model_id"], "hihell")
    assert predicted.returncode == 0, predicted.stderr
    assert set(json.loads(predicted.stdout)) >= {"next", "sequence"}
    generated = run(service, "models", "generate", got["model_id"], "--prompt", "hi",
                    "--max-chars", "12", "--seed", "1")
    assert generated.returncode == 0, generated.stderr
    assert len(generated.stdout.rstrip("\n")) == 12
    # Another owner's job is as absent to the CLI as to the API.
    assert run(service, "jobs", "get", job_id, key="bob").returncode == 1


def test_submit_from_stdin_cancel_and_errors(service: Service) -> None:
    submitted = run(service, "jobs", "submit", "-", stdin=json.dumps(long_lstm()))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    with service.client() as client:
        poll(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "running",
             timeout=60, what="the job to run")
    cancelled = run(service, "jobs", "cancel", job_id)
    assert cancelled.returncode == 0 and cancelled.stdout.startswith(job_id), cancelled.stderr
    watched = run(service, "jobs", "watch", job_id)
    assert watched.returncode == 1
    assert watched.stdout.startswith(f"{job_id} cancelled")
    again = run(service, "jobs", "cancel", job_id)
    assert again.returncode == 1 and "409" in again.stderr

    bad = run(service, "jobs", "submit", "-", stdin='{"dataset": "builtin:hihello"}')
    assert bad.returncode == 1 and "422" in bad.stderr and "model" in bad.stderr
    no_key = run(service, "jobs", "list", key=None)
    assert no_key.returncode == 1 and "TRAINSERVE_API_KEY" in no_key.stderr


def test_registry_commands_and_export(service: Service, tmp_path: Path) -> None:
    first = trained(service, {**long_lstm(8), "training": {**long_lstm(8)["training"],
                                                            "checkpoint_every": 8}})
    second = trained(service, {**long_lstm(8), "training": {**long_lstm(8)["training"],
                                                             "checkpoint_every": 8, "seed": 5}})
    name = f"cli-{first[-6:]}"
    assert run(service, "registry", "create", name, "--description", "hi").stdout.strip() == name
    added = [run(service, "registry", "add-version", name, m).stdout.split() for m in
             (first, second)]
    assert added == [[f"{name}:1", first], [f"{name}:2", second]]
    aliased = run(service, "registry", "alias", name, "production", "1=0.9", "2=0.1")
    assert aliased.returncode == 0, aliased.stderr
    assert aliased.stdout.strip() == f"{name}@production -> 1=0.9 2=0.1"
    table = run(service, "registry", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "TASK", "LATEST", "ALIASES"]
    row = next(line for line in table if line.startswith(name))
    assert "production->1(0.9)/2(0.1)" in row
    answer = json.loads(run(service, "models", "predict", f"{name}:2", "hihell").stdout)
    assert answer["version"] == 2 and answer["model_id"] == second

    out = tmp_path / "model.onnx"
    exported = run(service, "models", "export", f"{name}@production", "--format", "onnx",
                   "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    path, _, sha256 = exported.stdout.split()
    assert Path(path) == out and out.stat().st_size > 0 and len(sha256) == 64

    refused = run(service, "registry", "alias", name, "production", "1=0.5")
    assert refused.returncode == 1 and "sum to 0.5" in refused.stderr
    assert run(service, "registry", "unalias", name, "production").returncode == 0
    assert json.loads(run(service, "registry", "get", name).stdout)["aliases"] == []
