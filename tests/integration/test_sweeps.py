"""Sweeps (issue 20) through the real API and workers: trials are jobs, the pruner stops
some, and a sweep survives its API and every worker being killed."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bench import sweep_efficiency
from tests.integration.service import FAST_SETTINGS, Service, poll
from tests.integration.specs import SEED_MLP, small_mlp


def sweep_body(**changes: Any) -> dict[str, Any]:
    base = small_mlp(epochs=6, checkpoint_every=1)
    base["optimizer"] = {"name": "adadelta", "lr": 0.1}
    return {"name": "tiny", "base": base,
            "space": {"optimizer.lr": {"type": "loguniform", "low": 0.01, "high": 3.0},
                      "model.hidden_sizes": {"type": "categorical", "values": [[16], [32]]}},
            "objective": {"metric": "val_accuracy", "direction": "maximize"},
            "max_trials": 6, "max_concurrent": 2, "sampler": "tpe",
            "pruner": {"name": "asha", "min_epochs": 1, "reduction_factor": 3}, **changes}


def submit(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/sweeps", json=body)
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/v1/sweeps/{response.json()['id']}"
    return response.json()


def wait_sweep(client: httpx.Client, sweep_id: str, timeout: float = 300) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        sweep = client.get(f"/v1/sweeps/{sweep_id}").json()
        return sweep if sweep["status"] != "running" else None
    return poll(ended, timeout=timeout, interval=0.5, what=f"sweep {sweep_id} to end")


def assert_whole(service: Service, sweep: dict[str, Any], max_trials: int) -> None:
    """Exactly max_trials trials, numbered 0.., one job each, each epoch recorded once."""
    assert [t["number"] for t in sweep["trials"]] == list(range(max_trials))
    jobs = service.sql("SELECT id, epoch FROM jobs WHERE sweep_id = :s", s=sweep["id"])
    assert sorted(j for j, _ in jobs) == sorted(t["job_id"] for t in sweep["trials"])
    for job_id, epoch in jobs:
        epochs = [e for (e,) in service.sql(
            "SELECT epoch FROM epoch_metrics WHERE job_id = :j ORDER BY epoch", j=job_id)]
        assert epochs == list(range(1, epoch + 1)), (job_id, epochs)


def test_a_sweep_runs_its_trials_as_jobs_prunes_and_names_its_best(service: Service) -> None:
    client = service.client()
    sweep = submit(client, sweep_body())
    assert sweep["status"] == "running" and sweep["trials"]
    done = wait_sweep(client, sweep["id"])
    assert done["status"] == "succeeded", done
    assert_whole(service, done, 6)
    statuses = {t["status"] for t in done["trials"]}
    assert statuses <= {"completed", "pruned"}, statuses
    assert "completed" in statuses
    for trial in done["trials"]:
        job = client.get(f"/v1/jobs/{trial['job_id']}").json()
        assert job["sweep_id"] == sweep["id"]
        assert trial["status"] == {"succeeded": "completed"}.get(job["status"], job["status"])
        assert job["spec"]["optimizer"]["lr"] == trial["params"]["optimizer.lr"]
        assert job["spec"]["model"]["hidden_sizes"] == trial["params"]["model.hidden_sizes"]
        if trial["status"] == "pruned":  # stopped like a cancel: a checkpoint, no model
            assert trial["epochs"] < 6 and trial["value"] is not None
            assert client.get(f"/v1/jobs/{trial['job_id']}/checkpoints").json()["items"]
    best = done["best"]
    completed = [t for t in done["trials"] if t["status"] == "completed"]
    assert best["value"] == max(t["value"] for t in completed)
    model = client.get(f"/v1/models/{best['model_id']}").json()
    assert model["status"] == "ready" and model["job_id"] == best["job_id"]
    assert done["epochs"] == {"run": sum(t["epochs"] for t in done["trials"]), "budget": 36}
    # Listed, and its events replay every trial's state, ending with the sweep's.
    assert sweep["id"] in [s["id"] for s in client.get("/v1/sweeps").json()["items"]]
    assert client.get(f"/v1/sweeps/{sweep['id']}", headers={
        "Authorization": f"Bearer {service.keys['bob']}"}).status_code == 404
    with client.stream("GET", f"/v1/sweeps/{sweep['id']}/events") as stream:
        events = [json.loads(line[6:]) for line in stream.iter_lines()
                  if line.startswith("data: ")]
    assert [e["number"] for e in events[:-1]] == list(range(6))
    assert events[-1]["status"] == "succeeded" and events[-1]["best"] == best


def test_killing_the_api_and_every_worker_mid_sweep_loses_and_repeats_nothing(
        service: Service) -> None:
    client = service.client()
    sweep = submit(client, sweep_body(max_trials=4, pruner={"name": "none"}))

    def trial_running() -> bool:
        trials = client.get(f"/v1/sweeps/{sweep['id']}").json()["trials"]
        return len(trials) >= 2 and any(t["status"] == "running" and t["epochs"] >= 2
                                        for t in trials)
    poll(trial_running, timeout=120, interval=0.1, what="a trial some epochs in")
    service.stop("api", signal.SIGKILL)
    service.stop("worker", signal.SIGKILL)
    service.start_api()
    service.start_worker()
    service.wait_ready()
    done = wait_sweep(client, sweep["id"])
    assert done["status"] == "succeeded", done
    assert_whole(service, done, 4)
    assert all(t["status"] == "completed" and t["epochs"] == 6 for t in done["trials"])
    # The killed trial resumed from its checkpoint rather than starting again.
    assert "resumes after epoch" in service.log("worker")


def test_a_cancelled_sweep_stops_its_trials_and_queues_no_more(service: Service) -> None:
    client = service.client()
    body = sweep_body(max_trials=8, pruner={"name": "none"})
    body["base"]["training"]["epochs"] = 10_000
    sweep = submit(client, body)
    poll(lambda: any(t["status"] == "running" for t in client.get(
        f"/v1/sweeps/{sweep['id']}").json()["trials"]), timeout=60, what="a running trial")
    cancelled = client.post(f"/v1/sweeps/{sweep['id']}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"

    def all_ended() -> dict[str, Any] | None:
        now = client.get(f"/v1/sweeps/{sweep['id']}").json()
        return now if all(t["status"] == "cancelled" for t in now["trials"]) else None
    ended = poll(all_ended, timeout=10, interval=0.1, what="every trial to be cancelled")
    # Several driver passes later (API and worker), still no new trial.
    time.sleep(4 * float(FAST_SETTINGS["TRAINSERVE_RECONCILE_SECONDS"]))
    later = client.get(f"/v1/sweeps/{sweep['id']}").json()
    assert len(later["trials"]) == len(ended["trials"]) <= 2
    assert later["status"] == "cancelled"
    assert client.post(f"/v1/sweeps/{sweep['id']}/cancel").status_code == 409


BAD_SWEEPS = [
    ("unknown path", {"space": {"optimizer.lrr": {"type": "uniform", "low": 0.1, "high": 1}}},
     "space.optimizer.lrr", "unknown path"),
    ("low above high", {"space": {"optimizer.lr": {"type": "uniform", "low": 2, "high": 1}}},
     "space.optimizer.lr", "above high"),
    ("empty categorical", {"space": {"model.hidden_sizes": {"type": "categorical",
                                                            "values": []}}},
     "space.model.hidden_sizes", "at least 1"),
    ("objective not produced", {"objective": {"metric": "val_bpc", "direction": "minimize"}},
     "objective.metric", "not recorded for mlp"),
    ("max_concurrent 0", {"max_concurrent": 0}, "max_concurrent", "greater than or equal"),
    ("a value the spec refuses", {"space": {"training.batch_size": {
        "type": "int", "low": 0, "high": 64}}}, "space.training.batch_size", "refuses 0"),
    ("a categorical value the spec refuses", {"space": {"model.hidden_sizes": {
        "type": "categorical", "values": [[32], [-1]]}}}, "space.model.hidden_sizes",
     "refuses [-1]"),
    ("a base the service refuses", {"base": {**SEED_MLP, "model": {"arch": "lstm"}}},
     "base.model", "does not train on images"),
    ("grid over a continuous range", {"sampler": "grid"}, "space.optimizer.lr", "discrete"),
]


@pytest.mark.sqlite_only
@pytest.mark.parametrize("case, changes, field, message", BAD_SWEEPS,
                         ids=[case[0] for case in BAD_SWEEPS])
def test_bad_sweeps_are_422_naming_the_field_and_store_nothing(
        service: Service, case: str, changes: dict[str, Any], field: str, message: str) -> None:
    client = service.client()
    before = [service.sql(f"SELECT count(*) FROM {t}")[0][0] for t in ("sweeps", "jobs")]
    response = client.post("/v1/sweeps", json=sweep_body(**changes))
    assert response.status_code == 422, response.text
    fields = [".".join(str(p) for p in e["loc"][1:]) for e in response.json()["detail"]]
    assert any(f.startswith(field) for f in fields), (fields, response.text)
    assert message in response.text
    assert [service.sql(f"SELECT count(*) FROM {t}")[0][0] for t in ("sweeps", "jobs")] == before


@pytest.mark.sqlite_only
def test_the_cli_submits_watches_lists_and_cancels_sweeps(service: Service,
                                                          tmp_path: Path) -> None:
    body = sweep_body(max_trials=3, sampler="random", pruner={"name": "median"})
    body["base"]["training"]["epochs"] = 3
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(body))
    watched = cli(service, "sweeps", "submit", str(path), "--watch")
    assert watched.returncode == 0, watched.stderr
    sweep_id, *lines = watched.stdout.splitlines()
    assert [line.split()[:3] for line in lines if line.startswith("trial")][-1][:2] == [
        "trial", "2"]
    assert lines[-1].startswith(f"{sweep_id} succeeded; epochs ")
    listed = cli(service, "sweeps", "list")
    assert sweep_id in listed.stdout and "3/3" in listed.stdout
    again = cli(service, "sweeps", "cancel", sweep_id)
    assert again.returncode == 1 and "409: the sweep is already succeeded" in again.stderr
    bad = cli(service, "sweeps", "submit", "-", stdin=json.dumps({**body, "max_concurrent": 0}))
    assert bad.returncode == 1 and "max_concurrent" in bad.stderr


def cli(service: Service, *args: str, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = {**service.env, "TRAINSERVE_URL": service.base_url,
           "TRAINSERVE_API_KEY": service.keys["alice"]}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.sqlite_only
def test_a_12_trial_asha_sweep_of_the_seed_mlp_reaches_975(service: Service) -> None:
    """Issue 20, acceptance 1: lr, rho and the hidden layers of the seed's MLP on digits,
    20 epochs at most, TPE with ASHA: at least one trial pruned, the best at 0.975
    validation accuracy or more, and fewer epochs run than 12 x 20."""
    client = service.client()
    sweep = submit(client, sweep_efficiency.sweep_body(
        "seed-mlp-asha", sweep_efficiency.ASHA, trials=12, concurrent=2, sampler="tpe"))
    done = wait_sweep(client, sweep["id"], timeout=3600)
    assert done["status"] == "succeeded", done
    assert_whole(service, done, 12)
    assert any(t["status"] == "pruned" for t in done["trials"])
    assert done["best"]["value"] >= 0.975, done["best"]
    assert done["epochs"]["budget"] == 12 * 20
    assert done["epochs"]["run"] < done["epochs"]["budget"]
    print(f"best {done['best']}; epochs {done['epochs']}")
