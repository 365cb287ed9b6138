"""`trainserve sweeps`: submit, list, watch and cancel sweeps through a running API
(app/client.py), at TRAINSERVE_URL with TRAINSERVE_API_KEY."""

import argparse
import json

from app import client as api
from app.cli.remote import _client_command
from core.lifecycle import SweepStatus


def _watch(client: api.ApiClient, sweep_id: str) -> int:
    """A line per trial event, then the sweep's end and its best trial."""
    final: dict[str, object] = {}
    for event in client.sweep_events(sweep_id):
        if event.event == "trial":
            print(api.trial_line(event.data), flush=True)
        elif event.event == "status":
            final = event.data
    best = final.get("best")
    epochs = final.get("epochs") or {}
    print(f"{sweep_id} {final.get('status')}; epochs {epochs.get('run')}/"
          f"{epochs.get('budget')}" + (f"; best {json.dumps(best)}" if best else ""))
    return 0 if final.get("status") == SweepStatus.SUCCEEDED else 1


def cmd_submit(client: api.ApiClient, args: argparse.Namespace) -> int:
    sweep = client.request("POST", "/v1/sweeps", json=api.load_spec(args.spec))
    print(sweep["id"], flush=True)
    return _watch(client, sweep["id"]) if args.watch else 0


def cmd_list(client: api.ApiClient, args: argparse.Namespace) -> int:
    params = {"limit": args.limit} if args.limit is not None else {}
    page = client.request("GET", "/v1/sweeps", params=params)
    print(api.dumps(page) if args.json else api.sweep_table(page["items"]))
    return 0


def cmd_get(client: api.ApiClient, args: argparse.Namespace) -> int:
    print(api.dumps(client.request("GET", f"/v1/sweeps/{args.id}")))
    return 0


def cmd_watch(client: api.ApiClient, args: argparse.Namespace) -> int:
    return _watch(client, args.id)


def cmd_cancel(client: api.ApiClient, args: argparse.Namespace) -> int:
    sweep = client.request("POST", f"/v1/sweeps/{args.id}/cancel")
    print(f"{sweep['id']} {sweep['status']}")
    return 0


def add_parsers(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    sweeps = commands.add_parser("sweeps", help="hyperparameter sweeps (a client of the API "
                                 "at TRAINSERVE_URL, with TRAINSERVE_API_KEY)")
    sub = sweeps.add_subparsers(dest="sweeps_command", required=True)
    submit = sub.add_parser("submit", help="submit a sweep; prints its id")
    submit.add_argument("spec", help="a sweep file, .json or .yaml (- for stdin): name, base, "
                        "space, objective, max_trials, max_concurrent, sampler, pruner")
    submit.add_argument("--watch", action="store_true", help="then follow its trials")
    submit.set_defaults(func=_client_command(cmd_submit))
    list_ = sub.add_parser("list", help="sweeps, newest first")
    list_.add_argument("--limit", type=int, help="sweeps per page (the API's default if unset)")
    list_.add_argument("--json", action="store_true", help="the API's JSON, not a table")
    list_.set_defaults(func=_client_command(cmd_list))
    for name, func, text in (
            ("get", cmd_get, "print a sweep (its trials and best) as JSON"),
            ("watch", cmd_watch, "a line per trial start, prune and end until the sweep "
             "ends; exit 0 if it succeeded"),
            ("cancel", cmd_cancel, "cancel a sweep: its running trials stop, no more start")):
        command = sub.add_parser(name, help=text)
        command.add_argument("id", help="the sweep's id")
        command.set_defaults(func=_client_command(func))
