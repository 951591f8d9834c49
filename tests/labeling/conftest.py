"""Fixtures of the labeling server's tests: a small job, a running server, signed-in clients."""
import subprocess
import sys
import time

import httpx
import pytest

from labeling_job import make_job
from slapp.labeling.labelers import add_labeler


class RunningServer:
    """``python -m slapp.labeling.serve`` in a subprocess, as a lab runs it."""

    def __init__(self, env: dict, *args: str):
        self.args, self.env = args, env
        self.process = None
        self.url = None
        self.start()

    def start(self) -> None:
        """Start it and wait for the URL it prints."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "slapp.labeling.serve", *self.args],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if "http://" not in line:
            self.process.kill()
            raise AssertionError(f"no URL printed: {line!r} {self.process.stderr.read()}")
        self.url = line.split(" at ")[1].split()[0].rstrip("/")
        for _ in range(100):
            try:
                httpx.get(self.url + "/", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError("the server does not answer")

    def stop(self) -> None:
        """Stop it (SIGTERM) and wait."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@pytest.fixture
def job(labeling_db, tmp_path):
    """A job of four ROIs wanting two labels each, with artifact files."""
    return make_job(labeling_db, tmp_path / "artifacts")


@pytest.fixture
def tokens(labeling_db):
    """Three labelers' tokens, by name."""
    return {name: add_labeler(labeling_db, name) for name in ("ann", "ben", "cy")}


@pytest.fixture
def server(cli_env, job):
    """The server of ``job`` on a free port of 127.0.0.1."""
    running = RunningServer(cli_env, "--labeling_job", "test-job", "--port", "0")
    yield running
    running.stop()


def sign_in(url: str, token: str) -> httpx.Client:
    """An HTTP client signed in with ``token`` (the form a browser posts)."""
    client = httpx.Client(base_url=url, timeout=30)
    response = client.post("/signin", data={"token": token})
    assert response.status_code == 303, response.text
    return client


@pytest.fixture
def client_for(server):
    """``client_for(token)``: a signed-in httpx client, closed after the test."""
    clients = []

    def make(token: str) -> httpx.Client:
        clients.append(sign_in(server.url, token))
        return clients[-1]
    yield make
    for client in clients:
        client.close()
