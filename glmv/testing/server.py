"""A real `glmv serve` process on 127.0.0.1, for tests and benchmarks.

    with serve_process(model_dir, "--api-key", "k") as server:
        httpx.get(server.url + "/health")

It picks a free loopback port, waits for /health, and on exit stops the process (terminate, then kill) and
shows its log if it died early, so a failed start explains itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

LOOPBACK = "127.0.0.1"


@dataclass
class ServerProcess:
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen
    log: Path
    api_key: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@contextmanager
def serve_process(model_dir: str | Path, *args: str, api_key: str | None = None, startup_timeout: float = 120.0,
                  log_level: str = "INFO") -> Iterator[ServerProcess]:
    """Start `glmv serve --model model_dir ARGS` on a free loopback port; yield once /health answers 200.
    The API key travels in the environment ($GLMV_API_KEY), as a deployment should pass it. The decode step is
    not compiled unless ARGS say --compile: the engine's tests cover the compiled step, and a cold compile would
    cost every test server start half a minute."""
    if "--compile" not in args:
        args = (*args, "--no-compile")
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="glmv-serve-", suffix=".log")[1])
    cmd = [sys.executable, "-m", "glmv.cli", "--log-level", log_level, "serve", "--model", str(model_dir),
           "--host", LOOPBACK, "--port", str(port), *args]
    with open(log, "wb") as out:
        env = {**os.environ, "GLMV_API_KEY": api_key or ""}
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(f"http://{LOOPBACK}:{port}", process, log, api_key)
    try:
        _wait_healthy(server, startup_timeout)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.unlink(missing_ok=True)


def _wait_healthy(server: ServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"glmv serve exited with {server.process.returncode}:\n{server.log_text()}")
        try:
            if httpx.get(server.url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"glmv serve did not become healthy in {timeout:g} s:\n{server.log_text()}")
