"""`trainserve jobs`, `trainserve models`, `trainserve registry` and `trainserve workers`: an
HTTP client of a running API (app/client.py), at TRAINSERVE_URL with TRAINSERVE_API_KEY.
Nothing here reads the database."""

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from app import client as api
from core.lifecycle import JobStatus


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


def cmd_workers(client: api.ApiClient, args: argparse.Namespace) -> int:
    params = {"alive": "true"} if args.alive else {}
    page = client.request("GET", "/v1/workers", params=params)
    print(api.dumps(page) if args.json else api.worker_table(page["items"]))
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


def cmd_models_export(client: api.ApiClient, args: argparse.Namespace) -> int:
    suffix = {"onnx": "onnx", "torchscript": "pt", "safetensors": "zip"}[args.format]
    dest = Path(args.output or f"{args.id.replace(':', '-').replace('@', '-')}.{suffix}")
    sha256 = client.download(f"/v1/models/{args.id}/export", dest, format=args.format)
    print(f"{dest} sha256 {sha256}")
    return 0


def cmd_registry_create(client: api.ApiClient, args: argparse.Namespace) -> int:
    row = client.request("POST", "/v1/registry",
                         json={"name": args.name, "description": args.description})
    print(row["name"])
    return 0


def cmd_registry_list(client: api.ApiClient, args: argparse.Namespace) -> int:
    page = client.request("GET", "/v1/registry", params={"limit": args.limit})
    print(api.dumps(page) if args.json else api.registry_table(page["items"]))
    return 0


def cmd_registry_get(client: api.ApiClient, args: argparse.Namespace) -> int:
    print(api.dumps(client.request("GET", f"/v1/registry/{args.name}")))
    return 0


def cmd_registry_add(client: api.ApiClient, args: argparse.Namespace) -> int:
    row = client.request("POST", f"/v1/registry/{args.name}/versions", json={
        "model_id": args.model_id, "allow_contract_change": args.allow_contract_change})
    print(f"{row['name']}:{row['version']} {row['model_id']}")
    return 0


def cmd_registry_alias(client: api.ApiClient, args: argparse.Namespace) -> int:
    body = api.alias_body(args.versions)
    row = client.request("PUT", f"/v1/registry/{args.name}/aliases/{args.alias}", json=body)
    split = " ".join(f"{v}={w:g}" for v, w in row["versions"].items())
    print(f"{args.name}@{row['alias']} -> {split}")
    return 0


def cmd_registry_unalias(client: api.ApiClient, args: argparse.Namespace) -> int:
    client.request("DELETE", f"/v1/registry/{args.name}/aliases/{args.alias}")
    return 0


def add_registry_parsers(commands: "argparse._SubParsersAction[argparse.ArgumentParser]",
                         where: str) -> None:
    registry = commands.add_parser("registry", help="names, versions and aliases of models"
                                   + where)
    sub = registry.add_subparsers(dest="registry_command", required=True)
    create = sub.add_parser("create", help="register a name")
    create.add_argument("name")
    create.add_argument("--description", default="")
    create.set_defaults(func=_client_command(cmd_registry_create))
    list_ = sub.add_parser("list", help="registered names with their aliases")
    list_.add_argument("--limit", type=int, default=50)
    list_.add_argument("--json", action="store_true", help="the API's JSON, not a table")
    list_.set_defaults(func=_client_command(cmd_registry_list))
    get = sub.add_parser("get", help="a name's versions (metrics, lineage) and aliases, JSON")
    get.add_argument("name")
    get.set_defaults(func=_client_command(cmd_registry_get))
    add = sub.add_parser("add-version", help="register a ready model as the next version; "
                         "prints NAME:VERSION MODEL_ID")
    add.add_argument("name")
    add.add_argument("model_id")
    add.add_argument("--allow-contract-change", action="store_true",
                     help="accept another vocabulary or input shape than the registered one")
    add.set_defaults(func=_client_command(cmd_registry_add))
    alias = sub.add_parser("alias", help="point NAME@ALIAS at a version, or split it: "
                           "`alias shakespeare production 3` or `... 3=0.9 4=0.1`")
    alias.add_argument("name")
    alias.add_argument("alias")
    alias.add_argument("versions", nargs="+", help="VERSION, or VERSION=WEIGHT ... summing to 1")
    alias.set_defaults(func=_client_command(cmd_registry_alias))
    unalias = sub.add_parser("unalias", help="remove an alias")
    unalias.add_argument("name")
    unalias.add_argument("alias")
    unalias.set_defaults(func=_client_command(cmd_registry_unalias))


def add_parsers(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    where = " (a client of the API at TRAINSERVE_URL, with TRAINSERVE_API_KEY)"
    jobs = commands.add_parser("jobs", help="submit, list, watch and cancel jobs" + where)
    job_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    submit = job_commands.add_parser("submit", help="submit a spec; prints the job id")
    submit.add_argument("spec", help="a job spec file, .json or .yaml (- for stdin)")
    submit.add_argument("--watch", action="store_true", help="then show its progress")
    submit.set_defaults(func=_client_command(cmd_jobs_submit))
    list_ = job_commands.add_parser(
        "list", help="jobs, newest first; a queued one with its position and why it waits")
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

    workers = commands.add_parser(
        "workers", help="the registered workers: host, queues, devices, capacity, when last "
        "seen, alive, the gang each is in (an admin key)" + where)
    workers.add_argument("--alive", action="store_true", help="only the workers seen within "
                         "TRAINSERVE_WORKER_ALIVE_SECONDS")
    workers.add_argument("--json", action="store_true", help="the API's JSON, not a table")
    workers.set_defaults(func=_client_command(cmd_workers))

    models = commands.add_parser("models", help="ask trained models" + where)
    model_commands = models.add_subparsers(dest="models_command", required=True)
    predict = model_commands.add_parser(
        "predict", help="next characters after TEXT, or classes for a JSON list of inputs")
    predict.add_argument("id", help="the model's id, NAME@ALIAS or NAME:VERSION")
    predict.add_argument("text", help="text, or a JSON list: one example or a list of them")
    predict.add_argument("--top-k", type=int, default=3)
    predict.set_defaults(func=_client_command(cmd_models_predict))
    generate = model_commands.add_parser("generate", help="sample text from a character model")
    generate.add_argument("id", help="the model's id, NAME@ALIAS or NAME:VERSION")
    generate.add_argument("--prompt", help="default: the first character of its vocabulary")
    generate.add_argument("--max-chars", type=int, default=200)
    generate.add_argument("--temperature", type=float, default=1.0)
    generate.add_argument("--top-k", type=int, default=None)
    generate.add_argument("--seed", type=int, default=None, help="the same seed, the same text")
    generate.set_defaults(func=_client_command(cmd_models_generate))
    export = model_commands.add_parser(
        "export", help="download a model as ONNX, TorchScript or safetensors (checked against "
        "its sha256); prints the file and its sha256")
    export.add_argument("id", help="the model's id, NAME@ALIAS or NAME:VERSION")
    export.add_argument("--format", choices=["onnx", "torchscript", "safetensors"],
                        default="onnx")
    export.add_argument("-o", "--output", help="the file to write (default: named after ID)")
    export.set_defaults(func=_client_command(cmd_models_export))
    add_registry_parsers(commands, where)
