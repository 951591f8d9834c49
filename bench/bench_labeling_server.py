"""Benchmark: many labelers at once on the real labeling server, and a server killed mid-run.

::

    python bench/bench_labeling_server.py [--labelers 20] [--rois 1000] [--labels_per_roi 3]
        [--kill_after 1500] [--seed 0]

Starts an embedded PostgreSQL server of its own (in a temporary directory),
fills it with ``--rois`` ROIs (runs of 100 ROIs on a 512 x 512 frame, traces of
3,000 frames), one labeling job over all of them wanting ``--labels_per_roi``
labels each, and ``--labelers`` labelers. Then it runs
``python -m slapp.labeling.serve`` as a lab would and lets every labeler, each
an asyncio task with its own HTTP client and session, sign in and loop: ask for
the next ROI, answer it (cell or not, drawn from ``--seed``), until the server
says nothing is left. No think time: this is the load of many labelers at the
worst moment, not a day's.

After ``--kill_after`` acknowledged labels the server is killed with SIGKILL and
started again on the same port; labelers retry what failed (a submission with
the same request id, as the page does). At the end every acknowledged label
must be in ``roi_labels`` once, every ROI must have exactly its quota from
distinct labelers. Prints p50/p95/max latency of "next ROI" and "submit label"
(requests that failed while the server was down are counted, not timed) and the
server process's CPU time per request. ``--think_seconds`` makes each labeler
look at a ROI for that long on average (uniform, half to one and a half times)
before answering, a load nearer a real session's.
"""
import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import closing
from pathlib import Path

import httpx
import numpy as np
from psycopg2.extras import Json

from slapp import embedded
from slapp.db.init import create_tables
from slapp.labeling.labelers import add_labeler
from slapp.utils.query_utils import DbConnection

ROIS_PER_RUN = 100
NFRAMES = 3000

_FILL_RUNS = """
INSERT INTO segmentation_runs (ophys_experiment_id, ophys_segmentation_commit_hash,
    code_label, parameters_digest, source_video_path, movie_fingerprint, video_shape, nframes,
    nbinned, suite2p_version, suite2p_settings, suite2p_seconds, total_seconds, hostname)
SELECT 900000000 + n, 'c0ffee', '0.1.0', 'digest', '/movie.h5', '{}', '{512,512}', %(frames)s,
       136, '1.1.0', '{"settings": {"fs": 31.0}}', 30, 40, 'node'
FROM generate_series(0, %(runs)s - 1) AS n
"""
# a 10 x 10 square of pixels per ROI, at a place drawn by the server
_FILL_ROIS = """
INSERT INTO rois (segmentation_run_id, suite2p_roi_index, coo_row, coo_col, coo_data,
    trace, neuropil_trace, is_cell, cell_probability, npix, centroid_row, centroid_col,
    radius, aspect_ratio, compactness, skew)
SELECT runs.id, k, ARRAY(SELECT r + i / 10 FROM generate_series(0, 99) AS i),
       ARRAY(SELECT c + i %% 10 FROM generate_series(0, 99) AS i),
       array_fill(0.5::real, ARRAY[100]), array_fill(1.0::real, ARRAY[%(frames)s]),
       array_fill(0.5::real, ARRAY[%(frames)s]), k %% 3 > 0, 0.7, 100, r + 4.5, c + 4.5,
       5, 1.0, 1.0, 0.2
FROM segmentation_runs AS runs, generate_series(0, %(per_run)s - 1) AS k,
     LATERAL (SELECT (k * 37 + runs.id * 11) %% 500 AS r, (k * 53 + runs.id * 7) %% 500 AS c)
     AS place
"""


def free_port() -> int:
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fill(dbconn: DbConnection, n_rois: int, labels_per_roi: int, n_labelers: int) -> dict:
    """The runs, ROIs, job and labelers; returns the labelers' tokens."""
    runs = -(-n_rois // ROIS_PER_RUN)
    dbconn.execute(_FILL_RUNS, {"runs": runs, "frames": NFRAMES})
    dbconn.execute(_FILL_ROIS, {"per_run": ROIS_PER_RUN, "frames": NFRAMES})
    run_ids = [row["id"] for row in dbconn.query("SELECT id FROM segmentation_runs")]
    job_id = dbconn.insert(
        "INSERT INTO labeling_jobs (name, labels_per_roi, sampling, segmentation_run_ids, "
        "inputs, inputs_digest) VALUES ('bench', %s, 'all', %s, %s, 'bench') RETURNING id",
        (labels_per_roi, run_ids, Json({"segmentation_run_ids": run_ids})))[0]["id"]
    dbconn.execute("INSERT INTO labeling_tasks (labeling_job_id, roi_id) "
                   "SELECT %s, id FROM rois ORDER BY id LIMIT %s", (job_id, n_rois))
    return {f"labeler{index:02d}": add_labeler(dbconn, f"labeler{index:02d}")
            for index in range(n_labelers)}


class Server:
    """``python -m slapp.labeling.serve`` on a fixed port, killed and restarted at will."""

    def __init__(self, env: dict, port: int):
        self.env, self.port, self.process = env, port, None
        self.cpu_seconds = 0.0  # of the incarnations that ended

    def process_cpu_seconds(self) -> float:
        """User + system CPU time of the running server process so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def start(self) -> float:
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "slapp.labeling.serve", "--labeling_job", "bench",
             "--port", str(self.port)], env=self.env, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if "http://" not in line:
            raise RuntimeError(f"the server did not start: {line!r}")
        return time.perf_counter() - started

    def kill(self) -> None:
        self.cpu_seconds += self.process_cpu_seconds()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.cpu_seconds += self.process_cpu_seconds()
            self.process.terminate()
            self.process.wait(timeout=30)


class Tally:
    """What the labelers saw."""

    def __init__(self):
        self.next_ms, self.submit_ms = [], []
        self.acknowledged = {}  # request id -> (labeler, task id)
        self.refused = self.replayed = self.failed_requests = 0


async def request(client: httpx.AsyncClient, tally: Tally, method: str, path: str,
                  timings: list, **options) -> httpx.Response:
    """Send until the server answers (it may be down); time the answered try."""
    for attempt in range(200):
        started = time.perf_counter()
        try:
            response = await client.request(method, path, **options)
        except httpx.TransportError:
            tally.failed_requests += 1
            await asyncio.sleep(min(0.05 * 2 ** attempt, 0.5))
            continue
        timings.append((time.perf_counter() - started) * 1000)
        return response
    raise RuntimeError(f"{method} {path}: no answer after 200 tries")


async def labeler(name: str, token: str, url: str, tally: Tally, seed: int,
                  think_seconds: float) -> None:
    rng = random.Random(f"{seed}-{name}")
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        signed = await request(client, tally, "POST", "/signin", [], data={"token": token})
        assert signed.status_code == 303, signed.text
        while True:
            answer = await request(client, tally, "GET", "/api/next", tally.next_ms)
            answer.raise_for_status()
            task = answer.json()["task"]
            if task is None:
                return
            if think_seconds:
                await asyncio.sleep(rng.uniform(0.5, 1.5) * think_seconds)
            request_id = str(uuid.uuid4())
            body = {"labeling_task_id": task["labeling_task_id"], "source": "simulated",
                    "label": rng.choice(["cell", "not cell"]), "request_id": request_id,
                    "seconds_shown": rng.uniform(2, 20), "view_settings": {"bench": True}}
            stored = await request(client, tally, "POST", "/api/labels", tally.submit_ms,
                                   json=body)
            if stored.status_code in (200, 201):
                tally.acknowledged[request_id] = (name, task["labeling_task_id"])
                tally.replayed += stored.status_code == 200
            elif stored.status_code == 409:
                tally.refused += 1
            else:
                raise RuntimeError(f"unexpected answer {stored.status_code}: {stored.text}")


async def killer(server: Server, tally: Tally, kill_after: int, report: dict) -> None:
    while len(tally.acknowledged) < kill_after:
        await asyncio.sleep(0.01)
    report["acknowledged at kill"] = len(tally.acknowledged)
    server.kill()
    report["restart (s)"] = await asyncio.to_thread(server.start)


async def run_labelers(tokens: dict, url: str, server: Server, kill_after: int,
                       seed: int, think_seconds: float) -> tuple[Tally, dict, float]:
    tally, report = Tally(), {}
    started = time.perf_counter()
    kill = asyncio.create_task(killer(server, tally, kill_after, report))
    await asyncio.gather(*(labeler(name, token, url, tally, seed, think_seconds)
                           for name, token in tokens.items()))
    elapsed = time.perf_counter() - started
    if not kill.done():
        kill.cancel()
        report["acknowledged at kill"] = "never killed: the run ended first"
    return tally, report, elapsed


def check(dbconn: DbConnection, tally: Tally, n_rois: int, labels_per_roi: int) -> dict:
    """Every acknowledged label stored once; every ROI exactly at quota, distinct labelers."""
    rows = dbconn.query("SELECT labels.request_id, labels.labeling_task_id, labelers.name "
                        "FROM roi_labels AS labels JOIN labelers "
                        "ON labelers.id = labels.labeler_id")
    stored = {row["request_id"]: (row["name"], row["labeling_task_id"]) for row in rows}
    per_task = {}
    for name, task_id in stored.values():
        per_task.setdefault(task_id, []).append(name)
    return {
        "labels stored": len(rows),
        "acknowledged": len(tally.acknowledged),
        "acknowledged but missing": sum(request_id not in stored
                                        for request_id in tally.acknowledged),
        "stored twice (same request id)": len(rows) - len(stored),
        "ROIs over quota": sum(len(names) > labels_per_roi for names in per_task.values()),
        "ROIs under quota": n_rois - sum(len(names) == labels_per_roi
                                         for names in per_task.values()),
        "a labeler twice on a ROI": sum(len(set(names)) != len(names)
                                        for names in per_task.values()),
    }


def percentiles(values: list) -> str:
    p50, p95 = np.percentile(values, [50, 95])
    return f"p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  max {max(values):7.1f} ms  (n={len(values)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labelers", type=int, default=20)
    parser.add_argument("--rois", type=int, default=1000)
    parser.add_argument("--labels_per_roi", type=int, default=3)
    parser.add_argument("--kill_after", type=int, default=1500,
                        help="SIGKILL the server after this many acknowledged labels (0: never)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--think_seconds", type=float, default=0.0,
                        help="mean time a labeler looks at a ROI before answering (0: none)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-labeling-") as home:
        database = embedded.EmbeddedServer(Path(home) / "pg", port=free_port())
        database.start()
        try:
            credentials = database.credentials(embedded.LABELING_ROLE,
                                               embedded.LABELING_DATABASE)
            with DbConnection(**credentials) as dbconn:
                create_tables(dbconn)
                tokens = fill(dbconn, args.rois, args.labels_per_roi, args.labelers)
                env = {**os.environ, **database.environment()}
                server = Server(env, free_port())
                startup = server.start()
                url = f"http://127.0.0.1:{server.port}"
                try:
                    tally, report, elapsed = asyncio.run(run_labelers(
                        tokens, url, server,
                        args.kill_after or args.rois * args.labels_per_roi + 1, args.seed,
                        args.think_seconds))
                finally:
                    server.stop()
                outcome = check(dbconn, tally, args.rois, args.labels_per_roi)
        finally:
            database.stop()

    think = (f"{args.think_seconds:g} s mean think time" if args.think_seconds
             else "no think time")
    print(f"labeling server: {args.labelers} labelers at once, {args.rois} ROIs x "
          f"{args.labels_per_roi} labels, seed {args.seed}, {think}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end")
    print(f"server start {startup:.2f} s; labelling took {elapsed:.1f} s "
          f"({len(tally.acknowledged) / elapsed:.0f} labels/s)")
    n_requests = len(tally.next_ms) + len(tally.submit_ms)
    print(f"server CPU: {server.cpu_seconds:.1f} s for {n_requests} API requests "
          f"({1000 * server.cpu_seconds / n_requests:.1f} ms each)")
    print(f"next ROI      {percentiles(tally.next_ms)}")
    print(f"submit label  {percentiles(tally.submit_ms)}")
    print(f"refused as full (409): {tally.refused}; replayed retries stored once: "
          f"{tally.replayed}; requests that met a dead server: {tally.failed_requests}")
    for key, value in report.items():
        print(f"kill -9: {key}: {value if isinstance(value, (int, str)) else f'{value:.2f}'}")
    for key, value in outcome.items():
        print(f"check: {key}: {value}")
    ok = (outcome["acknowledged but missing"] == outcome["stored twice (same request id)"]
          == outcome["ROIs over quota"] == outcome["ROIs under quota"]
          == outcome["a labeler twice on a ROI"] == 0)
    print("OK: nothing lost, nothing duplicated, no quota exceeded" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
