"""Benchmark: building a segmentation manifest, concurrent against sequential movie discovery.

::

    python bench/bench_manifest.py [--experiments 1000] [--listing_delay_ms 2] [--repeats 3]

Builds a LIMS-like storage tree of synthetic experiments (each a few nested
directories and an HDF5 movie whose ``data`` dataset has a shape but no
frames written), the matching LIMS rows and one ``experiment_selection`` row
in an embedded PostgreSQL server of its own (in a temporary directory), then
times ``SegmentationManifest.run`` end to end with ``discovery_workers=1``
and with the default, in the same process. Each setting is run ``--repeats``
times after one untimed warm-up run and the best time is reported.

Two file systems are measured:

* local disk, as is (directory listings come from the page cache);
* a simulated network file system: every directory listing (``os.scandir``,
  which ``os.walk`` calls once per directory) first sleeps
  ``--listing_delay_ms``. Only listings are delayed, not ``stat`` or the
  HDF5 reads, so this underestimates a real network file system.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import closing, contextmanager
from pathlib import Path

import h5py

from slapp import embedded
from slapp.data_selection.segmentation_manifest import (SegmentationManifest,
                                                        SegmentationManifestSchema)
from slapp.db.init import create_tables
from slapp.demo.lims import add_experiment, create_lims_tables
from slapp.utils.query_utils import DbConnection

FIRST_EXPERIMENT_ID = 850_000_000
DEFAULT_WORKERS = SegmentationManifestSchema().fields["discovery_workers"].dump_default


def build_storage_tree(root: Path, experiment_ids: list[int]) -> dict:
    """Create the experiments' directories and movies; return id -> (nframes, directory)."""
    experiments = {}
    for k, experiment_id in enumerate(experiment_ids):
        directory = (root / f"specimen_{experiment_id + 3}"
                     / f"ophys_session_{experiment_id + 2}" / f"ophys_experiment_{experiment_id}")
        for sibling in ("demix", "neuropil_subtraction", "processed/suite2p/plane0"):
            (directory / sibling).mkdir(parents=True, exist_ok=True)
        (directory / "processed" / "suite2p" / "plane0" / "ops.npy").write_bytes(b"")
        (directory / "processed" / "motion_preview.webm").write_bytes(b"")
        movie = (directory / "processed" / "concat" / "concat_31Hz_0.h5" if k % 5 == 0
                 else directory / "processed" / "motion_corrected_video.h5")
        movie.parent.mkdir(parents=True, exist_ok=True)
        nframes = 48_000 + k % 4_000
        with h5py.File(movie, "w") as movie_file:
            movie_file.create_dataset("data", shape=(nframes, 512, 512), dtype="uint16",
                                      chunks=(1, 512, 512))
        experiments[experiment_id] = (nframes, directory)
    return experiments


def fill_databases(server: embedded.EmbeddedServer, experiments: dict) -> int:
    """Write the LIMS rows and one selection of every experiment; return its id."""
    with closing(server.admin_connection(embedded.LIMS_DATABASE)) as connection, \
            connection.cursor() as cursor:
        create_lims_tables(cursor)
        cursor.execute("BEGIN")
        for experiment_id, (nframes, directory) in experiments.items():
            add_experiment(cursor, experiment_id, project="VisualBehaviorMultiscope",
                           genotype="Sst-IRES-Cre", depth=175, nframes=nframes,
                           storage_directory=str(directory))
        cursor.execute("COMMIT")
    with DbConnection(**server.credentials(embedded.LABELING_ROLE,
                                           embedded.LABELING_DATABASE)) as label_dbconn:
        create_tables(label_dbconn)
        ids = list(experiments)
        return label_dbconn.insert(
            "INSERT INTO experiment_selection (base64_query_strings, slapp_commit_hash, "
            "ophys_experiment_ids, sub_selection_counts, sub_selected_ids, random_seed, "
            "comment_string) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (["YmVuY2g="], "bench", [ids], [len(ids)], ids, 0, "bench_manifest"))[0]["id"]


@contextmanager
def slow_directory_listings(delay_seconds: float):
    """Make every ``os.scandir`` (hence every ``os.walk`` step) wait first."""
    real_scandir = os.scandir

    def delayed_scandir(*args, **kwargs):
        time.sleep(delay_seconds)
        return real_scandir(*args, **kwargs)

    os.scandir = delayed_scandir
    try:
        yield
    finally:
        os.scandir = real_scandir


def time_manifest(server, selection_id: int, output: Path, workers: int, repeats: int):
    """Best of ``repeats`` timed runs (after one warm-up); returns (seconds, manifest)."""
    lims = DbConnection(**server.credentials(embedded.LIMS_ROLE, embedded.LIMS_DATABASE),
                        read_only=True)
    label = DbConnection(**server.credentials(embedded.LABELING_ROLE,
                                              embedded.LABELING_DATABASE))
    with lims, label:
        times = []
        for _ in range(repeats + 1):
            module = SegmentationManifest(input_data={
                "experiment_selection_id": selection_id, "output_json": str(output),
                "discovery_workers": workers, "log_level": "WARNING"}, args=[])
            start = time.perf_counter()
            manifest = module.run(lims, label)
            times.append(time.perf_counter() - start)
    return min(times[1:]), manifest, times[1:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--listing_delay_ms", type=float, default=2.0,
                        help="simulated network file system: wait per directory listing")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_manifest_") as scratch:
        scratch = Path(scratch)
        server = embedded.EmbeddedServer(scratch / "server")
        server.start()
        try:
            start = time.perf_counter()
            experiment_ids = [FIRST_EXPERIMENT_ID + 8 * k for k in range(args.experiments)]
            experiments = build_storage_tree(scratch / "prod0", experiment_ids)
            selection_id = fill_databases(server, experiments)
            listings = sum(1 for _ in os.walk(scratch / "prod0"))
            print(f"setup: {args.experiments} experiments, {listings} directories, "
                  f"{time.perf_counter() - start:.1f} s")
            print(f"cpu cores available: {len(os.sched_getaffinity(0))}")

            cases = [("local disk", 0.0, args.repeats),
                     (f"simulated network FS ({args.listing_delay_ms:g} ms per directory "
                      f"listing)", args.listing_delay_ms / 1000, 1)]
            for label, delay, repeats in cases:
                results = {}
                with slow_directory_listings(delay):
                    for workers in (1, DEFAULT_WORKERS):
                        results[workers] = time_manifest(
                            server, selection_id, scratch / f"manifest_{workers}.json",
                            workers, repeats)
                sequential, concurrent = results[1][0], results[DEFAULT_WORKERS][0]
                assert results[1][1] == results[DEFAULT_WORKERS][1], "manifests differ"
                print(f"\n{label}, best of {repeats} after a warm-up run:")
                for workers, (best, _, times) in results.items():
                    spread = (f" (median {statistics.median(times):.3f} s)"
                              if len(times) > 1 else "")
                    print(f"  discovery_workers={workers:<3d} {best:8.3f} s{spread}  "
                          f"{1000 * best / args.experiments:.2f} ms per experiment")
                print(f"  speed-up concurrent / sequential: {sequential / concurrent:.2f}x")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
