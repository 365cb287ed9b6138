"""An S3 endpoint of the suite's own: moto's standalone server (`moto_server`, from
moto[server]) on a free loopback port, started once per session as PostgreSQL and Redis are
by scripts/services.sh. TRAINSERVE_TEST_S3_ENDPOINT points the suite at another server."""

import atexit
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import boto3
import httpx

from bench.launcher import free_port, poll

# moto takes any credentials; boto3 needs some. The services the tests start inherit these.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "trainserve-test", "AWS_SECRET_ACCESS_KEY": "trainserve-test",
               "AWS_REGION": "us-east-1"}


def _up(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return False
    return True


@contextmanager
def s3_endpoint() -> Iterator[str]:
    """The endpoint URL of a running S3 server, with AWS_* credentials in os.environ."""
    for name, value in CREDENTIALS.items():
        os.environ.setdefault(name, value)
    given = os.environ.get("TRAINSERVE_TEST_S3_ENDPOINT")
    if given:
        yield given
        return
    port = free_port()
    binary = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        poll(lambda: process.poll() is not None or _up(url), timeout=30,
             what="moto_server to start")
        if process.poll() is not None:
            raise AssertionError(f"moto_server exited with {process.returncode}")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def new_bucket(endpoint: str) -> str:
    """A fresh bucket; returns its TRAINSERVE_ARTIFACT_URL (with a prefix, as deployments
    often use one)."""
    name = f"trainserve-test-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return f"s3://{name}/artifacts"


_shared: list[str] = []


def shared_endpoint() -> str:
    """One server for the whole test session (started on first use, stopped at exit)."""
    if not _shared:
        stack = ExitStack()
        _shared.append(stack.enter_context(s3_endpoint()))
        atexit.register(stack.close)
    return _shared[0]
