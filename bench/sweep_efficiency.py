"""What ASHA saves: the same 12-trial random search of the seed's MLP on digits, run to the
end without pruning and with ASHA (issue 20, acceptance 2).

Both sweeps sample with the same seed, so trial n has the same parameters in each; only the
pruner differs. Prints one JSON line: each sweep's best validation accuracy, the epochs its
trials ran together and its wall time; the gap between the bests in percentage points; and
ASHA's epochs as a share of the unpruned search's. The target is a gap of at most 0.5
points in at most 45% of the epochs.
"""

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.launcher import DEFAULT_TIMING, launch_local, poll

# The seed's MLP, Adadelta and batch; lr, rho and the hidden layers are searched.
BASE: dict[str, Any] = {
    "dataset": "builtin:digits",
    "model": {"arch": "mlp", "hidden_sizes": [1000, 1000], "activation": "relu"},
    "optimizer": {"name": "adadelta", "lr": 0.1, "rho": 0.95, "eps": 1e-5},
    "training": {"epochs": 20, "batch_size": 100, "seed": 0},
}
SPACE: dict[str, Any] = {
    "optimizer.lr": {"type": "loguniform", "low": 0.01, "high": 3.0},
    "optimizer.rho": {"type": "uniform", "low": 0.8, "high": 0.99},
    "model.hidden_sizes": {"type": "categorical", "values": [[256], [1000, 1000]]},
}
# Rungs at epochs 2, 6 and 18. Not at epoch 1: on digits a high-lr Adadelta trial (the
# best ones at the end) is often the worst after one epoch, and ASHA would stop it there.
ASHA = {"name": "asha", "min_epochs": 2, "reduction_factor": 3}


def sweep_body(name: str, pruner: dict[str, Any], *, trials: int, concurrent: int,
               sampler: str = "random", seed: int = 0) -> dict[str, Any]:
    return {"name": name, "base": BASE, "space": SPACE,
            "objective": {"metric": "val_accuracy", "direction": "maximize"},
            "max_trials": trials, "max_concurrent": concurrent, "sampler": sampler,
            "pruner": pruner, "seed": seed}


def run_sweep(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    sweep = client.post("/v1/sweeps", json=body)
    sweep.raise_for_status()
    sweep_id = sweep.json()["id"]

    def ended() -> dict[str, Any] | None:
        now = client.get(f"/v1/sweeps/{sweep_id}").json()
        return now if now["status"] != "running" else None
    done = poll(ended, timeout=6 * 3600, interval=2.0, what=f"sweep {sweep_id}")
    created = datetime.fromisoformat(done["created_at"])
    finished = datetime.fromisoformat(done["finished_at"])
    return {"status": done["status"], "best": done["best"]["value"] if done["best"] else None,
            "best_params": done["best"]["params"] if done["best"] else None,
            "epochs": done["epochs"]["run"], "budget": done["epochs"]["budget"],
            "pruned": sum(t["status"] == "pruned" for t in done["trials"]),
            "seconds": round((finished - created).total_seconds(), 1),
            "wall_seconds": round(time.monotonic() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--concurrent", type=int, default=2,
                        help="trials running at once (max_concurrent; one worker process "
                        "per slot)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        service, stop = launch_local(Path(tmp), **DEFAULT_TIMING,
                                     worker_concurrency=str(args.concurrent))
        try:
            with service.client() as client:
                plain = run_sweep(client, sweep_body("random-unpruned", {"name": "none"},
                                                     trials=args.trials,
                                                     concurrent=args.concurrent,
                                                     seed=args.seed))
                asha = run_sweep(client, sweep_body("random-asha", ASHA, trials=args.trials,
                                                    concurrent=args.concurrent,
                                                    seed=args.seed))
        finally:
            stop()
    gap = (plain["best"] - asha["best"]) * 100 if plain["best"] and asha["best"] else None
    share = asha["epochs"] / plain["epochs"] if plain["epochs"] else None
    print(json.dumps({
        "bench": "sweep_efficiency", "trials": args.trials, "epochs_per_trial": 20,
        "concurrent": args.concurrent, "seed": args.seed, "unpruned": plain, "asha": asha,
        "gap_points": round(gap, 3) if gap is not None else None,
        "epoch_share": round(share, 3) if share is not None else None,
        "target_met": gap is not None and share is not None and gap <= 0.5 and share <= 0.45,
    }))


if __name__ == "__main__":
    main()
