"""Benchmark: the labeling artifacts of a realistic session against segmenting it.

::

    flock /tmp/slapp-bench.lock python bench/bench_artifacts.py \\
        --work_dir /work/scratch/artifacts [--nframes 40000] [--size 512] [--seed 0]

1. Writes a realistic-preset synthetic movie (``--size`` squared x ``--nframes``,
   uint16, seed ``--seed``) under ``--work_dir`` unless it is there already.
2. Starts an embedded PostgreSQL under ``--work_dir`` and segments the movie once
   with segment's defaults (``python -m slapp.segmentation.segment``, bins of the
   manifest's default ``bin_size``), measuring the process' wall time and peak RSS;
   a stored run is reused (its figures were kept in ``segment.json``).
3. Runs ``python -m slapp.labeling.artifacts --segmentation_run_id R`` on every
   ROI of that run in a fresh process (wall, peak RSS), then again to show that
   nothing is redone, and sums the bytes written per ROI.

Every phase is printed with the movie's size and seed. ``--stop_after segment``
prepares the movie and the run only. ``--montage PNG`` draws the artifacts of the
ROI with the highest cell probability (the picture in ``docs/labeling_artifacts.rst``).
``--delete`` removes the work directory at the end (the movie is ~2 bytes per pixel
per frame: 21 GB at 512 x 512 x 40,000).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT_ID = 990000001


def measured(command: list[str], env: dict) -> dict:
    """Run a command; return its wall and CPU seconds, peak RSS (MiB) and output."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed:\n{output[-3000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "rss_mib": usage.ru_maxrss / 1024, "output": output}


def write_movie(path: Path, args) -> None:
    from slapp.demo.synthetic_movie import preset_spec, write_movie as write

    if path.exists():
        print(f"movie {path} exists: reused", flush=True)
        return
    started = time.perf_counter()
    write(path, preset_spec("realistic", args.nframes, args.size, args.size, args.seed))
    print(f"wrote {path} ({path.stat().st_size / 2 ** 30:.1f} GiB) in "
          f"{time.perf_counter() - started:.0f} s", flush=True)


def segment(work: Path, movie: Path, env: dict, args) -> dict:
    """The run's id and segment's figures, segmenting only the first time."""
    figures_path = work / "segment.json"
    if figures_path.exists():
        return json.loads(figures_path.read_text())
    from slapp.data_selection.segmentation_manifest import DEFAULT_BIN_SIZE

    manifest = work / "manifest.json"
    manifest.write_text(json.dumps({"manifest": [
        {"experiment_id": EXPERIMENT_ID, "nbinned": args.nframes // DEFAULT_BIN_SIZE,
         "input_video": str(movie), "log_level": "INFO"}]}))
    output_json = work / "segment_output.json"
    run = measured([sys.executable, "-m", "slapp.segmentation.segment", "--manifest_json",
                    str(manifest), "--manifest_index", "0", "--tmp_dir", str(work / "tmp"),
                    "--plot_dir", str(work / "plots"), "--output_json", str(output_json)], env)
    result = json.loads(output_json.read_text())
    figures = {"segmentation_run_id": result["segmentation_run_id"], "n_rois": result["n_rois"],
               "wall": run["wall"], "cpu": run["cpu"], "rss_mib": run["rss_mib"],
               "bin_size": DEFAULT_BIN_SIZE}
    figures_path.write_text(json.dumps(figures))
    return figures


def artifacts(work: Path, run_id: int, env: dict, workers: int) -> dict:
    output_dir = work / "artifacts"
    return measured([sys.executable, "-m", "slapp.labeling.artifacts", "--segmentation_run_id",
                     str(run_id), "--output_dir", str(output_dir), "--workers", str(workers),
                     "--output_manifest", str(work / "manifest.jsonl"), "--log_level", "INFO"],
                    env)


def draw_montage(line: dict, path: Path) -> None:
    """One ROI's artifacts side by side: the crops, the mask, the outlines, the clip's
    middle frame, and the trace JSON on its time axis."""
    import matplotlib
    matplotlib.use("Agg")
    import av
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    with av.open(line["video-source-ref"]) as container:
        frames = [frame.to_ndarray(format="gray") for frame in container.decode(video=0)]
    trace = json.loads(Path(line["trace-source-ref"]).read_text())
    panels = [("max-source-ref", "max projection"), ("avg-source-ref", "mean image"),
              ("correlation-source-ref", "correlation image"), ("roi-mask-source-ref", "mask"),
              ("source-ref", "outline, 10 um bar")]
    figure = plt.figure(figsize=(13, 5.2), dpi=100)
    grid = figure.add_gridspec(2, 6, height_ratios=[1, 1.1])
    for column, (key, title) in enumerate(panels):
        axes = figure.add_subplot(grid[0, column])
        axes.imshow(np.asarray(Image.open(line[key]).convert("L")), cmap="gray", vmin=0,
                    vmax=255)
        axes.set_title(title, fontsize=9)
        axes.axis("off")
    axes = figure.add_subplot(grid[0, 5])
    axes.imshow(frames[len(frames) // 2], cmap="gray", vmin=0, vmax=255)
    axes.set_title(f"clip, frame {len(frames) // 2 + 1} of {len(frames)}", fontsize=9)
    axes.axis("off")
    axes = figure.add_subplot(grid[1, 0:2])
    axes.imshow(np.asarray(Image.open(line["full-outline-source-ref"]).convert("L")),
                cmap="gray", vmin=0, vmax=255)
    axes.set_title("full-field outline, 40 um bar", fontsize=9)
    axes.axis("off")
    axes = figure.add_subplot(grid[1, 2:6])
    times = trace["pointStart"] + trace["pointInterval"] * np.arange(trace["dataLength"])
    axes.plot(times, trace["trace"], color="black", linewidth=1)
    axes.axvline(times[len(frames) // 2], color="tab:red", linewidth=0.8)
    axes.set_xlabel("seconds from the movie's start")
    axes.set_ylabel("F (Suite2P int16 units)")
    axes.set_title(f"trace JSON: {trace['dataLength']} points, one per clip frame "
                   f"({1 / trace['pointInterval']:.2f} per s); red: the frame above",
                   fontsize=9)
    figure.suptitle(f"experiment {line['experiment-id']}, ROI {line['roi-id']}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def montage(work: Path, env: dict, run_id: int, path: Path) -> None:
    from slapp.utils.query_utils import DbConnection

    credentials = {"user": env["LABELING_USER"], "password": env["LABELING_PASSWORD"],
                   "host": env["LABELING_HOST"], "port": int(env["LABELING_PORT"]),
                   "database": env["LABELING_DATABASE"]}
    with DbConnection(**credentials) as dbconn:
        roi_id = dbconn.query("SELECT id FROM rois WHERE segmentation_run_id = %s "
                              "ORDER BY cell_probability DESC, id LIMIT 1", (run_id,))[0]["id"]
    lines = [json.loads(line) for line in (work / "manifest.jsonl").read_text().splitlines()]
    draw_montage(next(line for line in lines if line["roi-id"] == roi_id), path)
    print(f"montage of ROI {roi_id}: {path}")


def tree_bytes(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", type=Path, default=Path("/work/scratch/artifacts"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--nframes", type=int, default=40000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--stop_after", choices=("segment", "artifacts"), default="artifacts")
    parser.add_argument("--delete", action="store_true")
    parser.add_argument("--montage", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO_ROOT))
    from slapp import embedded

    work = args.work_dir.absolute()
    work.mkdir(parents=True, exist_ok=True)
    movie = work / "motion_corrected_video.h5"
    size = f"realistic {args.size}x{args.size}x{args.nframes}, seed {args.seed}"
    print(f"movie: {size}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
          flush=True)
    write_movie(movie, args)
    server = embedded.EmbeddedServer(work / "db", port=None)
    server.start()
    try:
        env = {**os.environ, **server.environment(),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                           os.environ.get("PYTHONPATH")]))}
        subprocess.run([sys.executable, "-m", "slapp.db.init"], env=env, check=True)
        seg = segment(work, movie, env, args)
        print(f"segment ({size}, bin_size {seg['bin_size']}): run "
              f"{seg['segmentation_run_id']}, {seg['n_rois']} ROIs, wall {seg['wall']:.0f} s, "
              f"CPU {seg['cpu']:.0f} s, peak RSS {seg['rss_mib']:.0f} MiB", flush=True)
        if args.stop_after == "segment":
            return
        first = artifacts(work, seg["segmentation_run_id"], env, args.workers)
        written = tree_bytes(work / "artifacts")
        again = artifacts(work, seg["segmentation_run_id"], env, args.workers)
        print(first["output"][-2000:])
        print(f"artifacts ({size}, {seg['n_rois']} ROIs, --workers {args.workers}): wall "
              f"{first['wall']:.0f} s ({first['wall'] / seg['wall']:.2f} x segment's), CPU "
              f"{first['cpu']:.0f} s, peak RSS {first['rss_mib']:.0f} MiB; "
              f"{written / 2 ** 20:.1f} MiB written, {written / max(seg['n_rois'], 1) / 1024:.0f}"
              f" KiB per ROI (full-field video included); again: wall {again['wall']:.1f} s, "
              f"peak RSS {again['rss_mib']:.0f} MiB", flush=True)
        if args.montage:
            montage(work, env, seg["segmentation_run_id"], args.montage.absolute())
    finally:
        server.stop()
        if args.delete:
            shutil.rmtree(work)


if __name__ == "__main__":
    main()
