"""Benchmark: labels back into the pipeline, scored on held-out synthetic movies.

::

    flock /tmp/slapp-bench.lock python bench/bench_label_loop.py \\
        [--size 256] [--nframes 4000] [--train_seeds 0 1 2] [--test_seeds 3 4 5] \\
        [--labeler_seed 0] [--work_dir /work/scratch/loop/bench]

1. Writes realistic-preset synthetic movies with their ground truth
   (:mod:`slapp.demo.synthetic_movie`; kept in ``--work_dir`` and reused) and
   segments each with the segment command (real Suite2P, segment's defaults,
   22-frame bins) into an embedded PostgreSQL server of the benchmark's own
   (kept too: a rerun skips the segmentation). Where segment does not yet
   store a ROI's classifier features, they are read from Suite2P's kept
   ``stat.npy``.
2. Matches every ROI to the true cells (IoU >= 0.5,
   :mod:`slapp.evaluation.matching`): a matched ROI is a cell.
3. Makes a stratified labeling job over the training movies' ROIs (equal
   numbers from five bins of Suite2P's probability in each movie), and lets
   simulated labelers label it, three distinct labelers per ROI, written as
   ``roi_labels`` with source ``simulated``. Their error rates are stated in
   :data:`LABELERS`; one is biased towards "cell", one times out now and then
   (its ROIs are re-queued by ``consolidate`` and get a fourth label).
4. ``consolidate`` (majority of 3), ``train`` on the consensus; for
   comparison ``train`` on one label per ROI (the first labeler's), on the
   ground truth itself, and on the consensus with every stored feature.
5. ``predict`` each model on the held-out movies and scores F1 over the ROIs
   each classifier calls cells against the true cells, beside Suite2P's
   built-in classifier (``rois.is_cell``). Goal: the consensus-trained
   classifier beats the built-in by at least 0.05 F1.

Prints the sizes, seeds, each labeler's agreement with the consensus and the
truth, Fleiss' kappa, and the F1 table (per held-out movie and pooled).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse

from slapp import embedded
from slapp.data_selection.segmentation_manifest import DEFAULT_BIN_SIZE
from slapp.db.init import create_tables
from slapp.demo.synthetic_movie import (ground_truth_path, preset_spec, read_ground_truth,
                                        write_movie)
from slapp.evaluation.matching import match_rois
from slapp.labeling.classifier_file import FEATURE_KEYS, SUITE2P_KEYS
from slapp.utils.query_utils import DbConnection

FIRST_EXPERIMENT_ID = 990_000_000
N_STRATA = 5
# name: (probability of calling a true cell "not cell", probability of calling a
# non-cell "cell", probability of giving no answer: a Ground Truth timeout)
LABELERS = {
    "careful": (0.05, 0.05, 0.0),
    "average": (0.10, 0.10, 0.0),
    "hurried": (0.15, 0.15, 0.05),
    "sloppy": (0.20, 0.20, 0.0),
    "biased": (0.05, 0.40, 0.0),
}
# Every stored feature that Suite2P's stat holds (solidity is slapp's own).
EXTENDED_KEYS = tuple(key for key in FEATURE_KEYS if key != "solidity")
LABELING_TABLES = ("roi_predictions, classifier_models, label_consensus, roi_labels, "
                   "labeler_sessions, labelers, labeling_tasks, labeling_jobs")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def movies(work_dir: Path, seeds: list[int], size: int, nframes: int) -> dict[int, Path]:
    """Write (or reuse) one realistic movie per seed; seed -> movie path."""
    paths = {}
    for seed in seeds:
        path = work_dir / "movies" / f"realistic_{size}x{size}x{nframes}_seed{seed}.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            started = time.perf_counter()
            write_movie(path, preset_spec("realistic", nframes, size, size, seed))
            log(f"movie seed {seed} written in {time.perf_counter() - started:.0f} s")
        paths[seed] = path
    return paths


def run_command(env: dict, module: str, *args) -> str:
    """Run ``python -m module args`` against the benchmark's server; its stdout."""
    done = subprocess.run([sys.executable, "-m", module, *map(str, args)], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed: {done.stderr.strip()}")
    return done.stdout


def segment(env: dict, work_dir: Path, paths: dict[int, Path], nframes: int) -> dict[int, int]:
    """Segment every movie with the segment command; seed -> segmentation run id."""
    manifest = work_dir / "manifest.json"
    seeds = sorted(paths)
    manifest.write_text(json.dumps({"manifest": [
        {"experiment_id": FIRST_EXPERIMENT_ID + seed, "nbinned": nframes // DEFAULT_BIN_SIZE,
         "input_video": str(paths[seed].resolve())} for seed in seeds]}))
    runs = {}
    for index, seed in enumerate(seeds):
        output = work_dir / f"segment_{seed}.json"
        started = time.perf_counter()
        # a fixed code version: a rerun after editing slapp reuses the stored runs
        run_command({**env, "TRANSFORM_HASH": "bench_label_loop"},
                    "slapp.segmentation.segment", "--manifest_json", manifest,
                    "--manifest_index", index, "--keep_suite2p_results", "True",
                    "--tmp_dir", work_dir / "suite2p" / str(seed), "--output_json", output)
        result = json.loads(output.read_text())
        log(f"seed {seed}: run {result['segmentation_run_id']} {result['status']}, "
            f"{result['n_rois']} ROIs, {time.perf_counter() - started:.0f} s")
        runs[seed] = result["segmentation_run_id"]
    return runs


def fill_features(dbconn: DbConnection, work_dir: Path, runs: dict[int, int]) -> None:
    """Read ROI features from the kept stat.npy where segment did not store them."""
    for seed, run_id in runs.items():
        missing = dbconn.query("SELECT count(*) AS n FROM rois WHERE segmentation_run_id = %s "
                               "AND npix_norm IS NULL", (run_id,))[0]["n"]
        if not missing:
            continue
        stat_files = sorted((work_dir / "suite2p" / str(seed)).glob(
            "slapp_suite2p_*/suite2p/plane0/stat.npy"), key=os.path.getmtime)
        stat = np.load(stat_files[-1], allow_pickle=True)
        dbconn.bulk_insert([(
            "UPDATE rois SET npix_norm = %s, npix_soma = %s, std = %s, footprint = %s "
            "WHERE segmentation_run_id = %s AND suite2p_roi_index = %s",
            (float(roi["npix_norm"]), int(roi["npix_soma"]), float(roi["std"]),
             float(roi["footprint"]), run_id, index))
            for index, roi in enumerate(stat)])
        log(f"seed {seed}: features of {len(stat)} ROIs read from {stat_files[-1]}")


def roi_truth(dbconn: DbConnection, run_id: int, truth_path: Path) -> tuple[list, np.ndarray,
                                                                            np.ndarray]:
    """ROI ids, masks and whether each matches a true cell, in Suite2P order."""
    shape = tuple(dbconn.query("SELECT video_shape FROM segmentation_runs WHERE id = %s",
                               (run_id,))[0]["video_shape"])
    rows = dbconn.query("SELECT id, coo_row, coo_col, coo_data, is_cell, cell_probability "
                        "FROM rois WHERE segmentation_run_id = %s ORDER BY suite2p_roi_index",
                        (run_id,))
    masks = [scipy.sparse.coo_matrix((row["coo_data"], (row["coo_row"], row["coo_col"])),
                                     shape=shape) for row in rows]
    match = match_rois(masks, read_ground_truth(truth_path))
    is_cell = np.zeros(len(rows), dtype=bool)
    is_cell[[predicted for predicted, _, _ in match.matched_pairs]] = True
    return rows, masks, is_cell


def make_job(dbconn: DbConnection, name: str, run_ids: list[int], rois: list[dict],
             n_rois: int, rng: np.random.Generator) -> dict[int, int]:
    """A stratified job by SQL: equal numbers from each probability bin of each run."""
    per_run = {run_id: [roi for roi in rois if roi["run_id"] == run_id] for run_id in run_ids}
    chosen = []
    quota = n_rois // (len(run_ids) * N_STRATA)
    for run_rois in per_run.values():
        strata = [[roi for roi in run_rois if _stratum(roi) == stratum]
                  for stratum in range(N_STRATA)]
        for members in strata:
            order = rng.permutation(len(members))
            chosen += [members[i] for i in order[:quota]]
    rest = [roi for roi in rois if roi not in chosen]
    chosen += [rest[i] for i in rng.permutation(len(rest))[:n_rois - len(chosen)]]
    job_id = dbconn.insert(
        "INSERT INTO labeling_jobs (name, labels_per_roi, sampling, random_seed, n_rois, "
        "segmentation_run_ids, inputs, inputs_digest) VALUES (%s, 3, 'stratified', %s, %s, "
        "%s, %s, 'bench') RETURNING id",
        (name, 0, len(chosen), run_ids, json.dumps({"bench": name})))[0]["id"]
    tasks = {}
    for roi in chosen:
        tasks[roi["id"]] = dbconn.insert(
            "INSERT INTO labeling_tasks (labeling_job_id, roi_id, stratum, probability) "
            "VALUES (%s, %s, %s, %s) RETURNING id",
            (job_id, roi["id"], _stratum(roi), roi["cell_probability"]))[0]["id"]
    return tasks


def _stratum(roi: dict) -> int:
    return min(int(roi["cell_probability"] * N_STRATA), N_STRATA - 1)


def simulated_label(rng: np.random.Generator, labeler: str, cell: bool) -> str | None:
    miss, false_alarm, timeout = LABELERS[labeler]
    if rng.uniform() < timeout:
        return None
    says_cell = (rng.uniform() >= miss) if cell else (rng.uniform() < false_alarm)
    return "cell" if says_cell else "not cell"


def label_job(dbconn: DbConnection, tasks: dict[int, int], truth: dict[int, bool],
              labeler_ids: dict[str, int], rng: np.random.Generator) -> dict[int, list]:
    """Three distinct simulated labelers per task; task id -> [(labeler, label)]."""
    names = list(LABELERS)
    given = {}
    for roi_id, task_id in tasks.items():
        picked = rng.choice(len(names), size=3, replace=False)
        given[task_id] = [(names[i], simulated_label(rng, names[i], truth[roi_id]))
                          for i in picked]
    write_labels(dbconn, given, labeler_ids)
    return given


def write_labels(dbconn: DbConnection, given: dict[int, list], labeler_ids: dict[str, int]):
    dbconn.bulk_insert([
        ("INSERT INTO roi_labels (labeling_task_id, labeler_id, label, source) "
         "VALUES (%s, %s, %s, 'simulated')", (task_id, labeler_ids[name], label))
        for task_id, labels in given.items() for name, label in labels])


def answer_requeued(dbconn: DbConnection, tasks: dict[int, int], truth: dict[int, bool],
                    labeler_ids: dict[str, int], given: dict[int, list],
                    rng: np.random.Generator) -> int:
    """Give each re-queued task one label from a labeler who has not labeled it yet."""
    task_roi = {task_id: roi_id for roi_id, task_id in tasks.items()}
    extra = {}
    for row in dbconn.query("SELECT id FROM labeling_tasks WHERE extra_labels > 0 AND id = "
                            "ANY(%s)", (list(task_roi),)):
        task_id = row["id"]
        done = {name for name, _ in given[task_id]}
        free = [name for name in LABELERS if name not in done and LABELERS[name][2] == 0]
        name = free[rng.integers(len(free))]
        extra[task_id] = [(name, simulated_label(rng, name, truth[task_roi[task_id]]))]
        given[task_id] += extra[task_id]
    write_labels(dbconn, extra, labeler_ids)
    return len(extra)


def single_label_job(dbconn, name, run_ids, tasks, labels_of_task, labeler_ids):
    """A job over the same ROIs whose tasks carry one given label each."""
    job_id = dbconn.insert(
        "INSERT INTO labeling_jobs (name, labels_per_roi, sampling, random_seed, n_rois, "
        "segmentation_run_ids, inputs, inputs_digest) VALUES (%s, 1, 'stratified', 0, %s, %s, "
        "%s, 'bench') RETURNING id",
        (name, len(tasks), run_ids, json.dumps({"bench": name})))[0]["id"]
    given = {}
    for roi_id, task_id in tasks.items():
        new_task = dbconn.insert("INSERT INTO labeling_tasks (labeling_job_id, roi_id) "
                                 "VALUES (%s, %s) RETURNING id", (job_id, roi_id))[0]["id"]
        given[new_task] = [labels_of_task(roi_id, task_id)]
    write_labels(dbconn, given, labeler_ids)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--nframes", type=int, default=4000)
    parser.add_argument("--train_seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--test_seeds", type=int, nargs="+", default=[3, 4, 5])
    parser.add_argument("--labeler_seed", type=int, default=0)
    parser.add_argument("--job_fraction", type=float, default=0.8,
                        help="fraction of the training movies' ROIs in the labeling job")
    parser.add_argument("--work_dir", type=Path, default=Path("/work/scratch/loop/bench"))
    args = parser.parse_args()
    work_dir = args.work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.labeler_seed)
    seeds = args.train_seeds + args.test_seeds
    paths = movies(work_dir, seeds, args.size, args.nframes)
    server = embedded.EmbeddedServer(work_dir / "server")
    server.start()
    env = {**os.environ, **server.environment()}
    try:
        with DbConnection(**server.credentials(embedded.LABELING_ROLE,
                                               embedded.LABELING_DATABASE)) as dbconn:
            create_tables(dbconn)
            dbconn.execute(f"TRUNCATE {LABELING_TABLES} RESTART IDENTITY CASCADE")
            runs = segment(env, work_dir, paths, args.nframes)
            fill_features(dbconn, work_dir, runs)
            report = loop(dbconn, env, work_dir, args, runs, paths, rng)
    finally:
        server.stop()
    print_report(args, report)
    return 0


def loop(dbconn, env, work_dir, args, runs, paths, rng) -> dict:
    truth_path = {seed: ground_truth_path(path) for seed, path in paths.items()}
    rois, truth, masks, builtin = [], {}, {}, {}
    for seed in args.train_seeds + args.test_seeds:
        rows, seed_masks, is_cell = roi_truth(dbconn, runs[seed], truth_path[seed])
        masks[seed] = seed_masks
        builtin[seed] = np.array([row["is_cell"] for row in rows])
        for row, cell in zip(rows, is_cell):
            truth[row["id"]] = bool(cell)
            if seed in args.train_seeds:
                rois.append({**row, "run_id": runs[seed]})
    train_runs = [runs[seed] for seed in args.train_seeds]
    n_job = int(len(rois) * args.job_fraction)
    tasks = make_job(dbconn, "bench consensus", train_runs, rois, n_job, rng)
    labeler_ids = {name: dbconn.insert("INSERT INTO labelers (name) VALUES (%s) RETURNING id",
                                       (name,))[0]["id"] for name in [*LABELERS, "truth"]}
    given = label_job(dbconn, tasks, truth, labeler_ids, rng)
    first = json.loads(_consolidate(env, work_dir, "bench consensus", 3))
    requeued = answer_requeued(dbconn, tasks, truth, labeler_ids, given, rng)
    consolidated = json.loads(_consolidate(env, work_dir, "bench consensus", 3))
    single_label_job(dbconn, "bench single", train_runs, tasks,
                     lambda roi_id, task_id: next(item for item in given[task_id]
                                                  if item[1] is not None), labeler_ids)
    single_label_job(dbconn, "bench truth", train_runs, tasks,
                     lambda roi_id, task_id: ("truth", "cell" if truth[roi_id] else "not cell"),
                     labeler_ids)
    for job in ("bench single", "bench truth"):
        _consolidate(env, work_dir, job, 1)
    models = {}
    for label, job, min_labels, keys in (
            ("trained on consensus", "bench consensus", 3, SUITE2P_KEYS),
            ("trained on single labels", "bench single", 1, SUITE2P_KEYS),
            ("trained on ground truth", "bench truth", 1, SUITE2P_KEYS),
            ("consensus, 8 Suite2P features", "bench consensus", 3, EXTENDED_KEYS)):
        output = work_dir / "train.json"
        run_command(env, "slapp.labeling.train", "--labeling_jobs", job, "--min_labels",
                    min_labels, "--output_classifier",
                    work_dir / f"classifier_{len(models)}.npy", "--feature_keys", *keys,
                    "--output_json", output)
        models[label] = json.loads(output.read_text())
        log(f"{label}: model {models[label]['classifier_model_id']}, cv accuracy "
            f"{models[label]['cv_accuracy']:.3f}, F1 {models[label]['cv_f1']:.3f}")
    called = {"Suite2P built-in": {seed: builtin[seed] for seed in args.test_seeds}}
    for label, model in models.items():
        called[label] = {}
        for seed in args.test_seeds:
            run_command(env, "slapp.labeling.predict", "--classifier_model_id",
                        model["classifier_model_id"], "--segmentation_run_id", runs[seed])
            called[label][seed] = np.array([row["is_cell"] for row in dbconn.query(
                "SELECT predictions.is_cell FROM roi_predictions AS predictions JOIN rois ON "
                "rois.id = predictions.roi_id WHERE predictions.classifier_model_id = %s AND "
                "rois.segmentation_run_id = %s ORDER BY rois.suite2p_roi_index",
                (model["classifier_model_id"], runs[seed]))], dtype=bool)
    truth_masks = {seed: read_ground_truth(truth_path[seed]) for seed in args.test_seeds}
    matches = {label: {seed: match_rois([mask for mask, cell in zip(masks[seed], calls[seed])
                                         if cell], truth_masks[seed])
                       for seed in args.test_seeds} for label, calls in called.items()}
    task_roi = {task_id: roi_id for roi_id, task_id in tasks.items()}
    labels_vs_truth = {}
    for task_id, items in given.items():
        for name, label in items:
            if label is not None:
                labels_vs_truth.setdefault(name, []).append(
                    (label == "cell") == truth[task_roi[task_id]])
    return {"first": first, "consolidated": consolidated, "requeued": requeued,
            "models": models, "matches": matches, "runs": runs,
            "n_job": len(tasks), "n_job_cells": sum(truth[roi_id] for roi_id in tasks),
            "n_rois": {seed: len(masks[seed]) for seed in masks},
            "n_truth": {seed: len(read_ground_truth(truth_path[seed])) for seed in masks},
            "labeler_accuracy": {name: float(np.mean(values))
                                 for name, values in labels_vs_truth.items()}}


def pooled_f1(matches: dict) -> float:
    """F1 over several movies together: true positives and counts summed."""
    true_positives = sum(match.true_positives for match in matches.values())
    counted = sum(match.n_predicted + match.n_truth for match in matches.values())
    return 2 * true_positives / counted if counted else 0.0


def _consolidate(env, work_dir, job, min_labels) -> str:
    output = work_dir / "consolidate.json"
    run_command(env, "slapp.labeling.consolidate", "--labeling_job", job, "--min_labels",
                min_labels, "--output_json", output)
    return output.read_text()


def print_report(args, report) -> None:
    print()
    print(f"realistic preset, {args.size}x{args.size} px x {args.nframes} frames; training "
          f"movies seeds {args.train_seeds}, held-out seeds {args.test_seeds}; labeler seed "
          f"{args.labeler_seed}")
    print("ROIs (true cells) per movie: " + ", ".join(
        f"seed {seed}: {report['n_rois'][seed]} ({report['n_truth'][seed]})"
        for seed in sorted(report["n_rois"])))
    consolidated = report["consolidated"]
    print(f"stratified job: {report['n_job']} ROIs of the training movies "
          f"({report['n_job_cells']} match a true cell), 3 simulated labels each; "
          f"{report['first']['n_requeued']} re-queued after a timeout, "
          f"{report['requeued']} answered; consensus {consolidated['n_cell']} cell, "
          f"{consolidated['n_not_cell']} not cell, {consolidated['n_too_few']} without")
    print(f"Fleiss' kappa {consolidated['fleiss_kappa']:.3f}")
    print(f"{'labeler':<10} {'miss':>5} {'false+':>6} {'timeout':>7} {'ROIs':>5} "
          f"{'prec.':>6} {'recall':>6} {'acc. vs truth':>13}")
    for labeler in consolidated["labelers"]:
        miss, false_alarm, timeout = LABELERS[labeler["name"]]
        print(f"{labeler['name']:<10} {miss:>5.2f} {false_alarm:>6.2f} {timeout:>7.2f} "
              f"{labeler['n_rois']:>5} {labeler['precision']:>6.3f} {labeler['recall']:>6.3f} "
              f"{report['labeler_accuracy'][labeler['name']]:>13.3f}")
    print()
    header = "".join(f" seed {seed:>3}" for seed in args.test_seeds)
    print(f"{'classifier (F1 over ROIs called cells)':<40} {'cv F1':>6}{header} {'pooled':>7}")
    for label, per_seed in report["matches"].items():
        cv = report["models"][label]["cv_f1"] if label in report["models"] else None
        print(f"{label:<40} {'' if cv is None else f'{cv:.3f}':>6}" + "".join(
            f" {per_seed[seed].f1:>8.3f}" for seed in args.test_seeds)
            + f" {pooled_f1(per_seed):>7.3f}")
        print(f"{'':<40} {'':>6}" + "".join(
            f" {per_seed[seed].n_predicted:>4} ROIs" for seed in args.test_seeds)
            + "  called cells")
    gain = (pooled_f1(report["matches"]["trained on consensus"])
            - pooled_f1(report["matches"]["Suite2P built-in"]))
    print(f"consensus-trained minus built-in, pooled F1: {gain:+.3f} (goal >= +0.05)")


if __name__ == "__main__":
    sys.exit(main())
