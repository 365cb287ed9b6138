"""`trainserve jobs` and `trainserve models`: an HTTP client of a running API (app/client.py),
at TRAINSERVE_URL with TRAINSERVE_API_KEY. Nothing here reads the database."""

import argparse
import sys
from collections.abc import Callable

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


def add_parsers(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
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
