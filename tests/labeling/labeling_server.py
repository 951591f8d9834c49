"""The labeling server as a lab runs it, and a signed-in client: shared by the labeling tests.

A module of its own (not conftest.py), so that test modules import it by a name no
other test folder uses.
"""
import subprocess
import sys
import time

import httpx


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


def sign_in(url: str, token: str) -> httpx.Client:
    """An HTTP client signed in with ``token`` (the form a browser posts)."""
    client = httpx.Client(base_url=url, timeout=30)
    response = client.post("/signin", data={"token": token})
    assert response.status_code == 303, response.text
    return client
