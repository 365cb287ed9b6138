"""`make run` (`trainserve up`): its two lines, the URL and the admin key, come last, after
the API's and the worker's start-up lines, with no Celery banner or root warning below."""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.integration.service import free_port, poll

pytestmark = pytest.mark.sqlite_only


def test_up_prints_the_url_and_the_key_last(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINSERVE_")}
    env.update({"TRAINSERVE_DATA_DIR": str(tmp_path / "var"), "TRAINSERVE_PORT": str(free_port()),
                "PYTHONUNBUFFERED": "1"})
    up = subprocess.Popen([sys.executable, "-m", "app.cli", "up"], env=env, cwd=Path.cwd(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(up.stdout.readline, "")),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    try:
        poll(lambda: any("admin API key" in line for line in lines) or up.poll() is not None,
             timeout=120, interval=0.1, what="the admin key line")
        output = "".join(lines)
        assert up.poll() is None, output
        key_at = next(i for i, line in enumerate(lines) if "admin API key" in line)
        url_at = next(i for i, line in enumerate(lines) if line.startswith("trainserve: API at"))
        assert url_at == key_at - 1, output
        started = [i for i, line in enumerate(lines)
                   if "Application startup complete" in line or "ready." in line]
        assert len(started) == 2 and max(started) < url_at, output
        assert "superuser privileges" not in output and "[config]" not in output, output
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait(10)
        reader.join(10)
    assert up.returncode == 0, "".join(lines)[-3000:]
