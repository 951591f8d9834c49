"""Benchmark: streamed Suite2P against plain ``run_s2p``, and the ROI write against raw COPY.

::

    python bench/bench_segment.py [--height 512] [--width 512] [--nframes 8000]
                                  [--bin_size 115] [--repeats 3] [--latency_ms 2]
                                  [--rois 500] [--trace_frames 20000]
                                  [--skip_suite2p] [--skip_roi_write]

1. Streaming. One synthetic movie (the realistic preset of
   :mod:`slapp.demo.synthetic_movie`, 512x512 uint16) is segmented, each time in a fresh
   subprocess, by slapp's runner (``suite2p_outputs``: frames streamed from the
   HDF5 file) and by one plain ``suite2p.run_s2p`` call given exactly the ``db``
   and ``settings`` the runner recorded (paths pointed at a fresh directory).
   For each: wall time, CPU time and peak resident memory (``ru_maxrss`` from
   ``os.wait4``), and the bytes written under the working directory (walked
   before it is deleted); best of ``--repeats`` alternating runs, with ratios
   streamed / plain. The ROIs (pixels and weights) and traces of the last run of
   each are compared.

   Then again behind a slow-storage stand-in: in both subprocesses ``h5py.File``
   opens the movie through a Python file object that sleeps ``--latency_ms``
   before every read HDF5 makes of it (one per chunk, plus a few of metadata),
   the way each request to a network file system waits for a round trip. A run
   of the stream without read-ahead shows what the read-ahead thread buys.
   Goals: same ROIs and traces; peak RSS <= 0.5x plain; scratch <= 1 % of the
   movie; wall time <= 1.0x plain on the local disk, <= 0.9x behind the stand-in.

2. ROI write. ``--rois`` ROIs with ``--trace_frames``-frame traces and
   neuropil traces and 100-200-pixel masks, shaped as Suite2P leaves them
   (``stat`` dicts, ``F``, ``Fneu``, ``iscell``), are written (each in one
   transaction, into an empty table) by the segment step's store path
   (``rois_from_suite2p`` + ``store.write_run``: run row + binary COPY of the
   ROIs), by a raw binary COPY of the same arrays already converted
   (``DbConnection.copy_rows``), and by one ``INSERT`` per ROI with the
   arrays sent as text array literals, against an embedded PostgreSQL server.
   Goal: store path <= 1.5x raw COPY.
"""
import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from slapp.data_selection.segmentation_manifest import DEFAULT_BIN_SIZE
from slapp.data_selection.utils import MOVIE_DATASET
from slapp.demo.synthetic_movie import preset_spec, write_movie

EXPERIMENT_ID = 990_000_001
FS, TAU = 31.0, 0.7

INSERT_ROI = """
INSERT INTO rois (segmentation_run_id, suite2p_roi_index, coo_row, coo_col, coo_data, trace,
                  neuropil_trace, is_cell, cell_probability, npix, centroid_row, centroid_col,
                  radius, aspect_ratio, compactness, skew)
VALUES (%s, %s, %s::int[], %s::int[], %s::real[], %s::real[], %s::real[], %s, %s, %s, %s, %s,
        %s, %s, %s, %s)
"""


# ---------------------------------------------------------------- child processes

class LatencyFile(io.FileIO):
    """A file whose every read first waits a fixed latency: the slow-storage stand-in."""

    latency = 0.0
    reads = 0

    def readinto(self, buffer):
        time.sleep(self.latency)
        LatencyFile.reads += 1
        return super().readinto(buffer)


def install_slow_storage(movie: str, latency_ms: float) -> None:
    """Make every ``h5py.File(movie)`` of this process read through :class:`LatencyFile`."""
    LatencyFile.latency = latency_ms / 1000

    class SlowFile(h5py.File):
        def __init__(self, name, mode="r", *args, **kwargs):
            if isinstance(name, (str, os.PathLike)) and os.path.abspath(name) == movie:
                name = LatencyFile(movie, "r")
            super().__init__(name, mode, *args, **kwargs)

    h5py.File = SlowFile


def _dump_outputs(path, stat, traces, neuropil, iscell, extra):
    lengths = [len(roi["ypix"]) for roi in stat]
    np.savez(path, ypix=np.concatenate([roi["ypix"] for roi in stat]),
             xpix=np.concatenate([roi["xpix"] for roi in stat]),
             lam=np.concatenate([roi["lam"] for roi in stat]), lengths=lengths,
             F=np.asarray(traces), Fneu=np.asarray(neuropil), iscell=np.asarray(iscell))
    print("RESULT " + json.dumps(extra))


def child_stream(args) -> None:
    """Segment with slapp's runner; dump its outputs, figures and recorded settings."""
    from slapp.segmentation.suite2p_runner import Suite2pOptions, suite2p_outputs

    options = Suite2pOptions(fs=FS, tau=TAU, diameter=14.0, threshold_scaling=0.75,
                             spatial_scale=2, highpass_neuropil=25, max_overlap=0.75,
                             neuropil_coefficient=0.7, do_registration=False,
                             torch_device="cpu", classifier_path=None)
    with suite2p_outputs(Path(args.movie), args.nbinned, options, Path(args.scratch),
                         read_ahead=not args.no_read_ahead) as out:
        Path(args.settings).write_text(json.dumps(out.settings))
        _dump_outputs(args.dump, out.stat, out.traces, out.neuropil_traces, out.iscell,
                      {"seconds": out.seconds, "frame_source": out.frame_source,
                       "stage_seconds": out.stage_seconds, "scratch_bytes": out.scratch_bytes,
                       "latency_reads": LatencyFile.reads})


def child_plain(args) -> None:
    """One plain ``run_s2p`` call with the recorded settings; dump its outputs and figures."""
    from suite2p import run_s2p

    recorded = json.loads(Path(args.settings).read_text())
    db, settings = recorded["db"], recorded["settings"]
    work = Path(tempfile.mkdtemp(dir=args.scratch))
    db.update({"save_path0": str(work), "fast_disk": str(work)})
    started = time.perf_counter()
    run_s2p(db=db, settings=settings)
    seconds = time.perf_counter() - started
    scratch = sum(entry.stat().st_size for entry in work.rglob("*") if entry.is_file())
    plane = work / "suite2p" / "plane0"
    _dump_outputs(args.dump, np.load(plane / "stat.npy", allow_pickle=True),
                  np.load(plane / "F.npy"), np.load(plane / "Fneu.npy"),
                  np.load(plane / "iscell.npy"),
                  {"seconds": seconds, "frame_source": "binary (plain run_s2p)",
                   "scratch_bytes": scratch, "latency_reads": LatencyFile.reads})
    shutil.rmtree(work)


def run_child() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--child", "--movie", "--scratch", "--settings", "--dump"):
        parser.add_argument(name, required=True)
    parser.add_argument("--nbinned", type=int, required=True)
    parser.add_argument("--latency_ms", type=float, default=0)
    parser.add_argument("--no_read_ahead", action="store_true")
    args = parser.parse_args()
    if args.latency_ms:
        install_slow_storage(os.path.abspath(args.movie), args.latency_ms)
    {"stream": child_stream, "plain": child_plain}[args.child](args)


# ---------------------------------------------------------------- measuring

def measured_process(command: list[str]) -> dict:
    """Run a command; return its wall and CPU seconds, peak RSS in MiB and RESULT line."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command[2:4]} failed:\n{output[-3000:]}")
    result = json.loads(next(line for line in output.splitlines()
                             if line.startswith("RESULT "))[len("RESULT "):])
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "rss": usage.ru_maxrss / 1024, **result}


def warm_page_cache(path: Path) -> None:
    with open(path, "rb") as movie:
        while movie.read(1 << 24):
            pass


def compare_outputs(stream_dump: Path, plain_dump: Path) -> str:
    ours, theirs = np.load(stream_dump), np.load(plain_dump)
    same_masks = all(np.array_equal(ours[key], theirs[key])
                     for key in ("lengths", "ypix", "xpix", "lam"))
    identical = all(np.array_equal(ours[key], theirs[key]) for key in ("F", "Fneu", "iscell"))
    close = all(np.allclose(ours[key], theirs[key], rtol=1e-6, atol=0)
                for key in ("F", "Fneu", "iscell"))
    return (f"{len(ours['lengths'])} vs {len(theirs['lengths'])} ROIs, masks "
            f"{'identical' if same_masks else 'DIFFERENT'}, traces "
            f"{'bit-identical' if identical else 'within 1e-6' if close else 'DIFFERENT'}")


def bench_streaming(work: Path, args) -> None:
    movie = work / "movie.h5"
    started = time.perf_counter()
    spec = preset_spec("realistic", args.nframes, args.height, args.width, seed=0)
    write_movie(movie, spec)
    size = movie.stat().st_size
    with h5py.File(movie, "r") as h5:
        chunks = h5[MOVIE_DATASET].chunks
    print(f"movie: realistic preset, {args.nframes} frames of {args.height}x{args.width} "
          f"uint16 ({size / 2 ** 30:.2f} GiB, chunks {chunks}), {spec.ncells} somata, "
          f"written in {time.perf_counter() - started:.0f} s", flush=True)
    nbinned = args.nframes // args.bin_size
    scratch = work / "scratch"
    scratch.mkdir()
    common = [sys.executable, __file__, "--movie", str(movie), "--scratch", str(scratch),
              "--settings", str(work / "settings.json"), "--nbinned", str(nbinned)]

    def run(child, latency_ms=0.0, read_ahead=True):
        command = common + ["--child", child, "--dump", str(work / f"{child}.npz"),
                            "--latency_ms", str(latency_ms)]
        result = measured_process(command + ([] if read_ahead else ["--no_read_ahead"]))
        print(f"  {child:6} wall {result['wall']:6.1f} s  CPU {result['cpu']:6.1f} s  "
              f"peak {result['rss']:6.0f} MiB  scratch {result['scratch_bytes'] / 2**20:7.1f}"
              f" MiB  {result.get('stage_seconds', '')}", flush=True)
        return result

    warm_page_cache(movie)
    for label, latency in (("local disk", 0.0), (f"slow storage, {args.latency_ms:g} ms per "
                                                 "read", args.latency_ms)):
        if label != "local disk" and not args.latency_ms:
            continue
        print(f"\n{label}: best of {args.repeats}, alternating", flush=True)
        results = {"stream": [], "plain": []}
        for _ in range(args.repeats):
            results["stream"].append(run("stream", latency))
            results["plain"].append(run("plain", latency))
        extra = {}
        if latency:
            extra["stream, no read-ahead"] = [run("stream", latency, read_ahead=False)]
        report(label, results, extra, size, compare_outputs(work / "stream.npz",
                                                            work / "plain.npz"))


def report(label, results, extra, movie_bytes, equality) -> None:
    def best(runs, key):
        return min(run[key] for run in runs)

    rows = {"streamed (slapp)": results["stream"], "plain run_s2p": results["plain"], **extra}
    print(f"\n{label}{'':4}{'wall s':>8}{'CPU s':>8}{'peak MiB':>10}{'scratch MiB':>13}"
          f"{'% of movie':>12}   reads")
    for name, runs in rows.items():
        print(f"{name:24}{best(runs, 'wall'):8.1f}{best(runs, 'cpu'):8.1f}"
              f"{best(runs, 'rss'):10.0f}{best(runs, 'scratch_bytes') / 2 ** 20:13.1f}"
              f"{100 * best(runs, 'scratch_bytes') / movie_bytes:12.2f}   "
              f"{runs[0]['latency_reads']}")
    stream, plain = results["stream"], results["plain"]
    print(f"streamed / plain: wall {best(stream, 'wall') / best(plain, 'wall'):.2f}x, "
          f"CPU {best(stream, 'cpu') / best(plain, 'cpu'):.2f}x, peak RSS "
          f"{best(stream, 'rss') / best(plain, 'rss'):.2f}x, scratch "
          f"{best(stream, 'scratch_bytes') / best(plain, 'scratch_bytes'):.4f}x")
    if extra:
        no_ahead = extra["stream, no read-ahead"]
        print(f"read-ahead: wall {best(stream, 'wall'):.1f} s with, "
              f"{best(no_ahead, 'wall'):.1f} s without")
    print(f"outputs: {equality}; stages of the best streamed run: "
          f"{min(stream, key=lambda run: run['wall'])['stage_seconds']}")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)


# ---------------------------------------------------------------- ROI write

@contextmanager
def embedded_server(home: Path):
    from slapp import embedded
    from slapp.db.init import create_tables
    from slapp.utils.query_utils import DbConnection

    server = embedded.EmbeddedServer(home / "db", port=None)
    server.start()
    try:
        with DbConnection(**server.credentials(embedded.LABELING_ROLE,
                                               embedded.LABELING_DATABASE)) as dbconn:
            create_tables(dbconn)
        yield server
    finally:
        server.stop()


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


def bench_roi_write(server, args) -> None:
    from slapp import embedded
    from slapp.segmentation import store
    from slapp.segmentation.rois import ROI_COLUMNS, rois_from_suite2p
    from slapp.utils.query_utils import DbConnection

    outputs = synthetic_suite2p_outputs(args.rois, args.trace_frames, np.random.default_rng(0))
    # The raw COPY baseline sends the very same arrays, already in their final types.
    prepared = [roi.copy_row(0)[1:] for roi in rois_from_suite2p(video_shape=(512, 512),
                                                                 **outputs)]
    megabytes = (outputs["traces"].nbytes * 2 + sum(
        len(item["ypix"]) * 12 for item in outputs["stat"])) / 2 ** 20
    run = {"ophys_experiment_id": EXPERIMENT_ID + 1,
           "ophys_segmentation_commit_hash": "bench-write", "parameters_digest": "bench",
           "source_video_path": "/bench.h5", "movie_fingerprint": {},
           "video_shape": [512, 512], "nframes": args.trace_frames, "nbinned": 10,
           "suite2p_version": "bench", "suite2p_settings": {"bench": True},
           "suite2p_seconds": 0.0, "total_seconds": 0.0, "hostname": "bench"}
    credentials = server.credentials(embedded.LABELING_ROLE, embedded.LABELING_DATABASE)

    def store_path(dbconn):
        store.write_run(dbconn, run,
                        lambda: rois_from_suite2p(video_shape=(512, 512), **outputs))

    def raw_copy(dbconn):
        with dbconn.transaction() as cursor:
            cursor.execute("INSERT INTO segmentation_runs (ophys_experiment_id, "
                           "ophys_segmentation_commit_hash, parameters_digest, "
                           "source_video_path, movie_fingerprint, video_shape, nframes, "
                           "nbinned, suite2p_version, suite2p_settings, suite2p_seconds, "
                           "total_seconds, hostname) VALUES "
                           "(1, 'raw', 'b', '/b.h5', '{}', '{512,512}', 1, 1, 'b', '{}', 0, "
                           "0, 'b') "
                           "RETURNING id")
            run_id = cursor.fetchone()["id"]
            dbconn.copy_rows("rois", ROI_COLUMNS, ((run_id, *row) for row in prepared),
                             cursor=cursor)

    def insert_per_roi(dbconn):
        with dbconn.transaction() as cursor:
            cursor.execute("INSERT INTO segmentation_runs (ophys_experiment_id, "
                           "ophys_segmentation_commit_hash, parameters_digest, "
                           "source_video_path, movie_fingerprint, video_shape, nframes, "
                           "nbinned, suite2p_version, suite2p_settings, suite2p_seconds, "
                           "total_seconds, hostname) VALUES "
                           "(2, 'insert', 'b', '/b.h5', '{}', '{512,512}', 1, 1, 'b', '{}', 0, "
                           "0, 'b') "
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
    if "--child" in sys.argv:
        run_child()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--nframes", type=int, default=8000)
    parser.add_argument("--bin_size", type=int, default=DEFAULT_BIN_SIZE,
                        help="frames per binned frame: nbinned = nframes // bin_size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency_ms", type=float, default=2.0,
                        help="slow-storage stand-in: wait per read; 0 skips that part")
    parser.add_argument("--rois", type=int, default=500)
    parser.add_argument("--trace_frames", type=int, default=20000)
    parser.add_argument("--tmp_dir", default=None, help="where the movie and scratch go")
    parser.add_argument("--skip_suite2p", action="store_true",
                        help="only benchmark the ROI write")
    parser.add_argument("--skip_roi_write", action="store_true",
                        help="only benchmark streaming")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_segment_", dir=args.tmp_dir) as directory:
        if not args.skip_suite2p:
            bench_streaming(Path(directory), args)
        if not args.skip_roi_write:
            with embedded_server(Path(directory)) as server:
                bench_roi_write(server, args)


if __name__ == "__main__":
    main()
