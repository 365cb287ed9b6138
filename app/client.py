"""The `trainserve jobs ...` and `trainserve models ...` commands: an HTTP client of the API.

Configured by TRAINSERVE_URL (default http://127.0.0.1:8000) and TRAINSERVE_API_KEY. It
talks to the API only, never to the database, so it works from any machine.
"""

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx
import yaml

from core.lifecycle import TERMINAL, SweepStatus

DEFAULT_URL = "http://127.0.0.1:8000"
# A dropped event stream is resumed from its last id; give up after this long without one.
RECONNECT_SECONDS = 60.0
SWEEP_ENDED = frozenset(SweepStatus) - {SweepStatus.RUNNING}


class ClientError(Exception):
    """What the API refused, or why it could not be reached; printed as one line."""


@dataclass
class Event:
    id: str | None
    event: str
    data: dict[str, Any]


def parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    """Server-Sent Events from text lines, per the specification (comments skipped,
    `data` lines joined, an event dispatched at a blank line)."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield Event(fields.get("id"), fields.get("event", "message"),
                            json.loads("\n".join(data)))
            fields, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        else:
            fields[name] = value


class ApiClient:
    def __init__(self, base_url: str, api_key: str | None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers,
                                 timeout=timeout)

    @classmethod
    def from_env(cls) -> "ApiClient":
        key = os.environ.get("TRAINSERVE_API_KEY")
        if not key:
            raise ClientError("set TRAINSERVE_API_KEY to an API key "
                              "(`trainserve keys create NAME` makes one)")
        return cls(os.environ.get("TRAINSERVE_URL", DEFAULT_URL), key)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self.http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ClientError(f"{response.status_code}: {_describe(detail)}")
        return response.json() if response.content else None

    def download(self, path: str, dest: Path, **params: Any) -> str:
        """Stream a file to `dest`, checking it against the sha256 the API sends with it
        (`X-Content-SHA256`); returns that sha256. A mismatch leaves no file."""
        digest = hashlib.sha256()
        try:
            with self.http.stream("GET", path, params=params,
                                  timeout=httpx.Timeout(30.0, read=300.0)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ClientError(f"{response.status_code}: "
                                      f"{_describe(response.json().get('detail'))}")
                expected = response.headers.get("x-content-sha256", "")
                partial = dest.with_name(f".{dest.name}.part")
                with open(partial, "wb") as out:
                    for chunk in response.iter_bytes():
                        digest.update(chunk)
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self.http.base_url}: {exc}") from exc
        if digest.hexdigest() != expected:
            partial.unlink(missing_ok=True)
            raise ClientError(f"the download's sha256 {digest.hexdigest()} is not the "
                              f"{expected or 'missing'} the API sent")
        partial.replace(dest)
        return expected

    def events(self, job_id: str) -> Iterator[Event]:
        """The job's events to the end, reconnecting with Last-Event-ID if the stream
        drops: the server resumes after that id, so nothing is missed or repeated."""
        last_id: str | None = None
        deadline = time.monotonic() + RECONNECT_SECONDS
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                                      timeout=httpx.Timeout(30.0, read=None)) as response:
                    if response.status_code == 204:
                        return
                    if response.status_code >= 400:
                        response.read()
                        raise ClientError(f"{response.status_code}: "
                                          f"{_describe(response.json().get('detail'))}")
                    for event in parse_sse(response.iter_lines()):
                        last_id = event.id or last_id
                        deadline = time.monotonic() + RECONNECT_SECONDS
                        yield event
                        if event.event == "status" and event.data["status"] in TERMINAL:
                            return
            except httpx.TransportError as exc:  # dropped, refused, timed out
                if time.monotonic() > deadline:
                    raise ClientError(f"the event stream dropped: {exc}") from exc
            time.sleep(1.0)  # a pause between reconnects, so a restarting API is not hammered


    def sweep_events(self, sweep_id: str) -> Iterator[Event]:
        """The sweep's events to its end. A dropped stream is opened again; the server then
        sends every trial's current state again (its events are states, not deltas)."""
        deadline = time.monotonic() + RECONNECT_SECONDS
        while True:
            try:
                with self.http.stream("GET", f"/v1/sweeps/{sweep_id}/events",
                                      timeout=httpx.Timeout(30.0, read=None)) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise ClientError(f"{response.status_code}: "
                                          f"{_describe(response.json().get('detail'))}")
                    for event in parse_sse(response.iter_lines()):
                        deadline = time.monotonic() + RECONNECT_SECONDS
                        yield event
                        if event.event == "status" and event.data["status"] in SWEEP_ENDED:
                            return
            except httpx.TransportError as exc:
                if time.monotonic() > deadline:
                    raise ClientError(f"the event stream dropped: {exc}") from exc
            time.sleep(1.0)


def _describe(detail: Any) -> str:
    """FastAPI's validation list as `field: reason; ...`, anything else as it is."""
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
                         if isinstance(d, dict) else str(d) for d in detail)
    return str(detail)


def load_spec(path: str) -> dict[str, Any]:
    """A job spec from a .json, .yaml or .yml file (`-` reads JSON or YAML from stdin)."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    try:
        # YAML is a superset of JSON, and safe_load builds only plain data.
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ClientError(f"{path} is neither JSON nor YAML: {exc}") from exc
    if not isinstance(spec, dict):
        raise ClientError(f"{path} must hold one mapping (the job spec)")
    return spec


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds + 0.5))
    hours, rest = divmod(seconds, 3600)
    minutes = f"{rest // 60:02d}:{rest % 60:02d}"
    return f"{hours}:{minutes}" if hours else minutes


class ProgressBar:
    """One line redrawn in place with `\\r`: bar, percentage, epoch, loss and ETA.

    Redrawn at most every `interval` seconds (a tiny model records thousands of epochs a
    second) and always at the end. The ETA is measured from the epochs seen live, so a
    replay of finished epochs does not distort it."""

    def __init__(self, total: int, out: TextIO, width: int = 30, interval: float = 0.1,
                 unit: str = "epoch") -> None:
        self.total, self.out, self.width, self.interval = max(total, 1), out, width, interval
        self.unit = unit  # "step" for a max_steps job
        self.epoch, self.loss, self.val_loss = 0, None, None
        self._drawn = 0.0
        self._start: tuple[float, int] | None = None

    def update(self, epoch: int, metrics: dict[str, Any], force: bool = False) -> None:
        self.epoch = epoch
        self.loss = metrics.get("train_loss", self.loss)
        self.val_loss = metrics.get("val_loss", self.val_loss)
        now = time.monotonic()
        if self._start is None:
            self._start = (now, epoch)
        if force or now - self._drawn >= self.interval:
            self._drawn = now
            self.draw()

    def eta(self) -> str:
        if self.epoch >= self.total:
            return _clock(0)
        if self._start is None or self.epoch <= self._start[1]:
            return "--:--"
        rate = (self.epoch - self._start[1]) / max(time.monotonic() - self._start[0], 1e-6)
        return _clock((self.total - self.epoch) / rate)

    def line(self) -> str:
        fraction = min(self.epoch / self.total, 1.0)
        filled = int(fraction * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        loss = f" loss {self.loss:.4f}" if isinstance(self.loss, int | float) else ""
        val = f" val {self.val_loss:.4f}" if isinstance(self.val_loss, int | float) else ""
        return (f"[{bar}] {fraction * 100:3.0f}% {self.unit} {self.epoch}/{self.total}"
                f"{loss}{val} ETA {self.eta()}")

    def draw(self) -> None:
        self.out.write("\r" + self.line())
        self.out.flush()

    def close(self) -> None:
        self.draw()
        self.out.write("\n")
        self.out.flush()


def watch(client: ApiClient, job_id: str, out: TextIO = sys.stderr) -> dict[str, Any]:
    """Draw the job's progress from its event stream until it ends; the last status event's
    data (status, error, model_id, metrics)."""
    job = client.request("GET", f"/v1/jobs/{job_id}")
    bar = ProgressBar(job["progress"]["epochs"], out,
                      unit=job["progress"].get("unit", "epoch"))
    final: dict[str, Any] = {"status": job["status"], "error": job["error"],
                             "model_id": job["model_id"]}
    for event in client.events(job_id):
        if event.event == "metrics":
            # A max_steps job's rows carry their step, and a fractional epoch.
            bar.update(event.data.get("step", event.data["epoch"]), event.data)
        elif event.event == "status":
            final = event.data
            if final["status"] in TERMINAL:
                # The job's recorded progress, so a finished job's bar shows what it did.
                bar.update(final.get("epoch") or bar.epoch, final.get("metrics") or {},
                           force=True)
    bar.close()
    return final


def waiting(job: dict[str, Any]) -> tuple[str, str]:
    """A queued job's place on its queue (`#1`: next; `held`: its owner's quota holds it)
    and why it waits; dashes for a job that is not queued."""
    if job["status"] != "queued":
        return "-", "-"
    position = job.get("queue_position")
    return (f"#{position}" if position else "held",
            job.get("waiting_reason") or "waiting for a free worker")


def job_table(jobs: list[dict[str, Any]]) -> str:
    rows = [("ID", "STATUS", "PROGRESS", "LOSS", "NAME", "CREATED", "PRIORITY", "POSITION",
             "WAITING")]
    for job in jobs:
        progress = job["progress"]
        loss = (job.get("metrics") or {}).get("train_loss")
        rows.append((job["id"], job["status"],
                     f"{progress['epoch']}/{progress['epochs']}",
                     f"{loss:.4f}" if isinstance(loss, int | float) else "-",
                     job.get("name") or "-", job["created_at"][:19],
                     job.get("priority", "normal"), *waiting(job)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def sweep_table(sweeps: list[dict[str, Any]]) -> str:
    rows = [("ID", "STATUS", "TRIALS", "BEST", "EPOCHS", "NAME", "CREATED")]
    for sweep in sweeps:
        best = sweep.get("best")
        rows.append((sweep["id"], sweep["status"],
                     f"{len(sweep['trials'])}/{sweep['spec']['max_trials']}",
                     f"{best['value']:.4f}" if best else "-",
                     f"{sweep['epochs']['run']}/{sweep['epochs']['budget']}",
                     sweep["name"], sweep["created_at"][:19]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def worker_table(workers: list[dict[str, Any]]) -> str:
    rows = [("NAME", "HOST", "QUEUES", "DEVICES", "CONCURRENCY", "MAX_PROCS", "LAST_SEEN",
             "ALIVE", "GANG")]
    for worker in workers:
        devices = worker["devices"]
        rows.append((worker["name"], worker["host"], ",".join(worker["queues"]),
                     f"{devices['count']} {devices['kind']}", str(worker["concurrency"]),
                     str(worker["max_procs"]), worker["last_seen"][:19],
                     "yes" if worker["alive"] else "no", worker.get("gang_job_id") or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def trial_line(trial: dict[str, Any]) -> str:
    value = trial.get("value")
    params = " ".join(f"{k}={json.dumps(v)}" for k, v in trial["params"].items())
    return (f"trial {trial['number']:>3} {trial['status']:<9} epochs {trial['epochs']:>4} "
            f"value {value:.4f}  {params}" if isinstance(value, int | float) else
            f"trial {trial['number']:>3} {trial['status']:<9} epochs {trial['epochs']:>4} "
            f"value -       {params}")


def predict_body(text: str, top_k: int) -> dict[str, Any]:
    """A JSON list is a classifier's input (one example or several); anything else is text
    for a character model."""
    if text.lstrip().startswith("["):
        try:
            inputs = json.loads(text)
        except ValueError:
            inputs = None
        if isinstance(inputs, list) and inputs:
            return {"inputs": inputs if isinstance(inputs[0], list) else [inputs]}
    return {"text": text, "top_k": top_k}


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def alias_body(versions: list[str]) -> dict[str, Any]:
    """`["3"]` -> {"version": 3}; `["3=0.9", "4=0.1"]` -> {"versions": {"3": 0.9, "4": 0.1}}."""
    if len(versions) == 1 and "=" not in versions[0]:
        try:
            return {"version": int(versions[0])}
        except ValueError:
            raise ClientError(f"{versions[0]!r} is not a version number") from None
    split: dict[str, float] = {}
    for item in versions:
        version, _, weight = item.partition("=")
        try:
            split[str(int(version))] = float(weight)
        except ValueError:
            raise ClientError(f"{item!r}: give VERSION=WEIGHT, e.g. 3=0.9") from None
    return {"versions": split}


def registry_table(items: list[dict[str, Any]]) -> str:
    rows = [("NAME", "TASK", "LATEST", "ALIASES")]
    for item in items:
        aliases = ", ".join(
            f"{a['alias']}->" + "/".join(f"{v}" + (f"({w:g})" if w != 1 else "")
                                          for v, w in a["versions"].items())
            for a in item["aliases"])
        rows.append((item["name"], item.get("task") or "-",
                     str(item["latest_version"] or "-"), aliases or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)
