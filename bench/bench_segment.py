"""Benchmark: the segment step against plain Suite2P, and its ROI write against raw COPY.

::

    python bench/bench_segment.py [--height 256] [--width 256] [--nframes 2000]
                                  [--rois 500] [--trace_frames 20000] [--repeats 3]

Everything runs against an embedded PostgreSQL server of its own, in a
temporary directory.

1. Suite2P overhead. One synthetic movie (``slapp.demo.synthetic_movie``) is
   segmented by ``python -m slapp.segmentation.segment`` in a subprocess, and
   by a subprocess that makes one plain ``suite2p.run_s2p`` call with exactly
   the ``db`` and ``settings`` the segment run recorded in its
   ``segmentation_runs.suite2p_settings`` (paths pointed at a fresh directory).
   Wall time, CPU time and peak resident memory (``ru_maxrss`` from
   ``os.wait4``) of each process are printed with the ratio segment / plain;
   CPU time is the steadier figure on a machine shared with other work. The movie is read once
   beforehand so both start from a warm page cache; the two are run
   ``--repeats`` times, alternating, and the best of each is compared.
   Goals: time <= 1.10x, memory <= 1.15x.

2. ROI write. ``--rois`` ROIs with ``--trace_frames``-frame traces and
   neuropil traces and 100-200-pixel masks, shaped as Suite2P leaves them
   (``stat`` dicts, ``F``, ``Fneu``, ``iscell``), are written (each in one
   transaction, into an empty table) by the segment step's store path
   (``rois_from_suite2p`` + ``store.write_run``: run row + binary COPY of the
   ROIs), by a raw binary COPY of the same arrays already converted
   (``DbConnection.copy_rows``), and by one ``INSERT`` per ROI with the
   arrays sent as text array literals. Goal: store path <= 1.5x raw COPY.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from slapp import embedded
from slapp.data_selection.segmentation_manifest import DEFAULT_BIN_SIZE
from slapp.db.init import create_tables
from slapp.demo.synthetic_movie import MovieSpec, write_movie
from slapp.segmentation import store
from slapp.segmentation.rois import ROI_COLUMNS, rois_from_suite2p
from slapp.utils.query_utils import DbConnection

EXPERIMENT_ID = 990_000_001

# The plain Suite2P baseline: the recorded db and settings, pointed at a new directory.
PLAIN_SUITE2P = """
import json, sys, time
from suite2p import run_s2p
recorded = json.load(open(sys.argv[1]))
db, settings = recorded["db"], recorded["settings"]
db.update({"save_path0": sys.argv[2], "fast_disk": sys.argv[2]})
started = time.perf_counter()
try:
    run_s2p(db=db, settings=settings)
except ValueError as error:  # no ROI found: a result, as in the segment step
    if not str(error).startswith("no ROIs were found"):
        raise
print(f"run_s2p seconds: {time.perf_counter() - started:.3f}")
"""

INSERT_ROI = """
INSERT INTO rois (segmentation_run_id, suite2p_roi_index, coo_row, coo_col, coo_data, trace,
                  neuropil_trace, is_cell, cell_probability, npix, centroid_row, centroid_col,
                  radius, aspect_ratio, compactness, skew)
VALUES (%s, %s, %s::int[], %s::int[], %s::real[], %s::real[], %s::real[], %s, %s, %s, %s, %s,
        %s, %s, %s, %s)
"""


@contextmanager
def embedded_server(home: Path):
    server = embedded.EmbeddedServer(home / "db", port=None)
    server.start()
    try:
        with DbConnection(**server.credentials(embedded.LABELING_ROLE,
                                               embedded.LABELING_DATABASE)) as dbconn:
            create_tables(dbconn)
        yield server
    finally:
        server.stop()


def measured_process(command: list[str], env: dict) -> tuple[float, float, float, str]:
    """Run a command; return its wall seconds, CPU seconds, peak RSS in MiB and output."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed ({process.returncode}):\n{output[-3000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, output


def warm_page_cache(path: Path) -> None:
    with open(path, "rb") as movie:
        while movie.read(1 << 24):
            pass


def bench_suite2p(work: Path, server: embedded.EmbeddedServer, args) -> None:
    movie_path = work / "movie.h5"
    spec = MovieSpec(nframes=args.nframes, height=args.height, width=args.width,
                     ncells=max(1, int(30 * args.height * args.width / 128 ** 2)), seed=7)
    started = time.perf_counter()
    write_movie(movie_path, spec)
    print(f"movie: {args.nframes} frames of {args.height}x{args.width}, {spec.ncells} cells "
          f"(written in {time.perf_counter() - started:.0f} s)")
    nbinned = max(1, args.nframes // DEFAULT_BIN_SIZE)
    manifest = work / "manifest.json"
    manifest.write_text(json.dumps({"manifest": [
        {"experiment_id": EXPERIMENT_ID, "nbinned": nbinned, "input_video": str(movie_path),
         "log_level": "ERROR"}]}))
    scratch = work / "scratch"
    scratch.mkdir()
    env = {**os.environ, **server.environment(), "TRANSFORM_HASH": "bench-segment"}
    segment = [sys.executable, "-m", "slapp.segmentation.segment", "--manifest_json",
               str(manifest), "--manifest_index", "0", "--tmp_dir", str(scratch),
               "--overwrite", "True"]
    settings_path = work / "recorded_settings.json"
    warm_page_cache(movie_path)

    def run_segment():
        seconds, cpu, peak, output = measured_process(segment, env)
        with DbConnection(**server.credentials(embedded.LABELING_ROLE,
                                               embedded.LABELING_DATABASE)) as dbconn:
            row = dbconn.query("SELECT suite2p_settings, suite2p_seconds FROM "
                               "segmentation_runs WHERE ophys_experiment_id = %s",
                               (EXPERIMENT_ID,))[0]
        if not settings_path.exists():
            print("segment:", output.strip().splitlines()[-1])
            settings_path.write_text(json.dumps(row["suite2p_settings"]))
        return seconds, cpu, peak, row["suite2p_seconds"]

    def run_plain():
        plain_dir = Path(tempfile.mkdtemp(dir=scratch))
        seconds, cpu, peak, output = measured_process(
            [sys.executable, "-c", PLAIN_SUITE2P, str(settings_path), str(plain_dir)], env)
        subprocess.run(["rm", "-rf", str(plain_dir)], check=True)
        return seconds, cpu, peak, float(output.strip().splitlines()[-1].split(": ")[1])

    results = {"segment": [], "plain run_s2p": []}
    results["segment"].append(run_segment())  # first: records the settings to replay
    for repeat in range(args.repeats):
        results["plain run_s2p"].append(run_plain())
        if repeat + 1 < args.repeats:
            results["segment"].append(run_segment())

    def best(name, field):
        return min(run[field] for run in results[name])

    print(f"\n{'(best of ' + str(args.repeats) + ')':16}{'wall s':>8}{'CPU s':>8}"
          f"{'peak MiB':>10}{'in run_s2p s':>14}   wall s of each run")
    for name, runs in results.items():
        each = ", ".join(f"{run[0]:.1f}" for run in runs)
        print(f"{name:16}{best(name, 0):8.1f}{best(name, 1):8.1f}{best(name, 2):10.0f}"
              f"{best(name, 3):14.1f}   {each}")
    print(f"segment / plain: wall time {best('segment', 0) / best('plain run_s2p', 0):.2f}x "
          f"(goal <= 1.10x), CPU time {best('segment', 1) / best('plain run_s2p', 1):.2f}x, "
          f"peak memory {best('segment', 2) / best('plain run_s2p', 2):.2f}x (goal <= 1.15x)")
    print(f"load average during the runs: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def synthetic_suite2p_outputs(count: int, frames: int, rng: np.random.Generator) -> dict:
    """Suite2P-shaped outputs: stat dicts with 100-200-pixel masks, F, Fneu, iscell."""
    stat = []
    for _ in range(count):
        npix = int(rng.integers(100, 201))
        stat.append({"ypix": rng.integers(0, 512 - 14) + rng.integers(0, 14, npix),
                     "xpix": rng.integers(0, 512 - 14) + rng.integers(0, 14, npix),
                     "lam": rng.random(npix, dtype=np.float32), "radius": 6.0,
                     "aspect_ratio": 1.1, "compact": 1.05, "skew": float(rng.normal(1, 0.3))})
    return {"stat": stat,
            "traces": rng.normal(500, 50, (count, frames)).astype(np.float32),
            "neuropil_traces": rng.normal(300, 30, (count, frames)).astype(np.float32),
            "iscell": np.column_stack([rng.random(count) > 0.3, rng.random(count)])}


def bench_roi_write(server: embedded.EmbeddedServer, args) -> None:
    outputs = synthetic_suite2p_outputs(args.rois, args.trace_frames, np.random.default_rng(0))
    # The raw COPY baseline sends the very same arrays, already in their final types.
    prepared = [roi.copy_row(0)[1:] for roi in rois_from_suite2p(video_shape=(512, 512),
                                                                 **outputs)]
    megabytes = (outputs["traces"].nbytes * 2 + sum(
        len(item["ypix"]) * 12 for item in outputs["stat"])) / 2 ** 20
    run = {"ophys_experiment_id": EXPERIMENT_ID + 1,
           "ophys_segmentation_commit_hash": "bench-write", "source_video_path": "/bench.h5",
           "video_shape": [512, 512], "nframes": args.trace_frames, "nbinned": 10,
           "suite2p_version": "bench", "suite2p_settings": {"bench": True},
           "suite2p_seconds": 0.0, "total_seconds": 0.0, "hostname": "bench"}
    credentials = server.credentials(embedded.LABELING_ROLE, embedded.LABELING_DATABASE)

    def store_path(dbconn):
        rois = rois_from_suite2p(video_shape=(512, 512), **outputs)
        store.write_run(dbconn, run, rois)

    def raw_copy(dbconn):
        with dbconn.transaction() as cursor:
            cursor.execute("INSERT INTO segmentation_runs (ophys_experiment_id, "
                           "ophys_segmentation_commit_hash, source_video_path, video_shape, "
                           "nframes, nbinned, suite2p_version, suite2p_settings, "
                           "suite2p_seconds, total_seconds, hostname) VALUES "
                           "(1, 'raw', '/b.h5', '{512,512}', 1, 1, 'b', '{}', 0, 0, 'b') "
                           "RETURNING id")
            run_id = cursor.fetchone()["id"]
            dbconn.copy_rows("rois", ROI_COLUMNS, ((run_id, *row) for row in prepared),
                             cursor=cursor)

    def insert_per_roi(dbconn):
        with dbconn.transaction() as cursor:
            cursor.execute("INSERT INTO segmentation_runs (ophys_experiment_id, "
                           "ophys_segmentation_commit_hash, source_video_path, video_shape, "
                           "nframes, nbinned, suite2p_version, suite2p_settings, "
                           "suite2p_seconds, total_seconds, hostname) VALUES "
                           "(2, 'insert', '/b.h5', '{512,512}', 1, 1, 'b', '{}', 0, 0, 'b') "
                           "RETURNING id")
            run_id = cursor.fetchone()["id"]
            for row in prepared:
                values = [run_id, *row]
                for position in (2, 3, 4, 5, 6):  # arrays as text literals '{1,2,...}'
                    values[position] = "{" + ",".join(map(str, values[position].tolist())) + "}"
                cursor.execute(INSERT_ROI, values)

    methods = {"store.write_run": store_path, "raw binary COPY": raw_copy,
               "INSERT per ROI": insert_per_roi}
    best = {name: float("inf") for name in methods}
    with DbConnection(**credentials) as dbconn:
        names = list(methods)
        for repeat in range(args.repeats):  # the order rotates, so none always goes first
            for name in names[repeat % len(names):] + names[:repeat % len(names)]:
                method = methods[name]
                dbconn.execute("TRUNCATE segmentation_runs, rois")
                started = time.perf_counter()
                method(dbconn)
                best[name] = min(best[name], time.perf_counter() - started)
        dbconn.execute("TRUNCATE segmentation_runs, rois")
    print(f"\nROI write: {args.rois} ROIs, {args.trace_frames}-frame traces, "
          f"{megabytes:.0f} MiB of arrays (best of {args.repeats})")
    for name, seconds in best.items():
        print(f"{name:18}{seconds:8.2f} s  {seconds / best['raw binary COPY']:6.2f}x raw COPY")
    print(f"store path / raw COPY: {best['store.write_run'] / best['raw binary COPY']:.2f}x "
          f"(goal <= 1.5x); INSERT per ROI / store path: "
          f"{best['INSERT per ROI'] / best['store.write_run']:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--nframes", type=int, default=2000)
    parser.add_argument("--rois", type=int, default=500)
    parser.add_argument("--trace_frames", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip_suite2p", action="store_true",
                        help="only benchmark the ROI write")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_segment_") as directory, \
            embedded_server(Path(directory)) as server:
        if not args.skip_suite2p:
            bench_suite2p(Path(directory), server, args)
        bench_roi_write(server, args)


if __name__ == "__main__":
    main()
