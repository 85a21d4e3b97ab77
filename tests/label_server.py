"""Start and stop a real MONAI Label server (``monai-iqad label start``) for tests; shared by the label test modules."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def label_server(
    cmd: Sequence[str], port: int, env: Mapping[str, str], log_path: Path, timeout: float = 120.0
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run ``cmd`` (a server listening on ``port``), wait until ``GET /info/`` answers 200, yield ``(url, process)``;
    stop the process group on exit. Fails the test with the end of the server log when it does not come up."""
    import requests

    url = f"http://127.0.0.1:{port}"
    log = open(log_path, "wb")
    proc = subprocess.Popen(list(cmd), env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail("server did not start:\n" + Path(log_path).read_text(errors="replace")[-4000:])
            time.sleep(0.3)
        yield url, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
