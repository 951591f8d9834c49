"""Fixtures of the labeling server's tests: a small job, a running server, signed-in clients."""

import httpx
import pytest

from labeling_job import make_job
from labeling_server import RunningServer, sign_in
from slapp.labeling.labelers import add_labeler


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
