"""A small labeling job written with SQL, and real artifact files for its ROIs.

The artifacts step (``slapp.labeling.artifacts``) is not used: these tests need
only files of the original's kinds (PNG crops, a VP9 WebM clip, the trace JSON)
at the paths a ``roi_manifests`` row names.
"""
import json
from pathlib import Path

import av
import numpy as np
from PIL import Image
from psycopg2.extras import Json

from stored_runs import insert_run, random_masks

VIDEO_SHAPE = (96, 112)
NFRAMES = 600
FS = 31.0
CLIP_FPS = 10
CLIP_FRAMES = 40  # a 4 s clip
CLIP_START_FRAME = 155  # the clip covers frames 155.. of the movie (5 s in)


def write_png(path: Path, array: np.ndarray) -> None:
    """An 8-bit PNG of ``array`` (grey for 2-D, RGBA for 3-D)."""
    Image.fromarray(array.astype(np.uint8)).save(path)


def write_clip(path: Path, n_frames: int = CLIP_FRAMES, size: int = 128) -> None:
    """A VP9 WebM clip of a bright blob moving across a noisy background."""
    rng = np.random.default_rng(1)
    with av.open(str(path), "w", format="webm") as container:
        stream = container.add_stream("libvpx-vp9", rate=CLIP_FPS)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "40", "b:v": "0"}
        rows, cols = np.mgrid[:size, :size]
        for index in range(n_frames):
            centre = 20 + index * (size - 40) / n_frames
            blob = 200 * np.exp(-((rows - size / 2) ** 2 + (cols - centre) ** 2) / 60)
            grey = np.clip(30 + blob + rng.normal(0, 8, (size, size)), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.stack([grey] * 3, -1), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_artifacts(directory: Path, roi_id: int, experiment_id: int, clip: Path) -> dict:
    """Write one ROI's files (the clip is shared) and return its manifest line."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(roi_id)
    rows, cols = np.mgrid[:128, :128]
    disk = ((rows - 64) ** 2 + (cols - 64) ** 2) < 36
    files = {}
    for key, brightness in (("avg", 90), ("max", 160)):
        image = brightness + 60 * disk + rng.normal(0, 15, (128, 128))
        files[f"{key}-source-ref"] = directory / f"{roi_id}_{key}.png"
        write_png(files[f"{key}-source-ref"], np.clip(image, 0, 255))
    files["roi-mask-source-ref"] = directory / f"{roi_id}_mask.png"
    write_png(files["roi-mask-source-ref"], disk * 255)
    outline = np.zeros((128, 128, 4))
    outline[disk ^ (((rows - 64) ** 2 + (cols - 64) ** 2) < 16)] = (255, 0, 0, 255)
    files["source-ref"] = directory / f"{roi_id}_outline.png"
    write_png(files["source-ref"], outline)
    full = np.zeros((*VIDEO_SHAPE, 4))
    full[..., :3] = rng.uniform(40, 120, (*VIDEO_SHAPE, 1))
    full[..., 3] = 255
    files["full-outline-source-ref"] = directory / f"{roi_id}_full_outline.png"
    write_png(files["full-outline-source-ref"], full)
    files["trace-source-ref"] = directory / f"{roi_id}_trace.json"
    files["trace-source-ref"].write_text(json.dumps({
        "pointStart": CLIP_START_FRAME / FS, "pointInterval": 1 / CLIP_FPS,
        "dataLength": CLIP_FRAMES, "trace": rng.normal(100, 10, CLIP_FRAMES).tolist()}))
    files["video-source-ref"] = clip
    files["full-video-source-ref"] = clip
    return {"experiment-id": experiment_id, "roi-id": roi_id,
            **{key: str(path) for key, path in files.items()}}


def make_job(dbconn, artifact_dir: Path, *, name: str = "test-job", n_rois: int = 4,
             labels_per_roi: int = 2, with_images: bool = True) -> dict:
    """One run of ``n_rois`` ROIs, a job over all of them, and their artifacts.

    Returns
    -------
    dict
        ``job_id``, ``run_id``, ``roi_ids``, ``task_ids`` (in ROI order) and
        ``artifact_dir``.
    """
    rng = np.random.default_rng(7)
    masks = random_masks(rng, VIDEO_SHAPE, n_rois, radius=4)
    run_id = insert_run(dbconn, 851_000_001, masks, nframes=NFRAMES, video_shape=VIDEO_SHAPE)
    roi_ids = [row["id"] for row in dbconn.query(
        "SELECT id FROM rois WHERE segmentation_run_id = %s ORDER BY id", (run_id,))]
    if with_images:
        size = VIDEO_SHAPE[0] * VIDEO_SHAPE[1]
        dbconn.execute(
            "INSERT INTO segmentation_images (segmentation_run_id, mean_image, max_projection, "
            "correlation_image, computed_by) VALUES (%s, %s, %s, %s, 'segment')",
            (run_id, rng.uniform(0, 1, size).tolist(), rng.uniform(0, 2, size).tolist(),
             rng.uniform(0, 1, size).tolist()))
    job_id = dbconn.insert(
        "INSERT INTO labeling_jobs (name, labels_per_roi, sampling, segmentation_run_ids, "
        "inputs, inputs_digest) VALUES (%s, %s, 'all', %s, %s, 'digest') RETURNING id",
        (name, labels_per_roi, [run_id], Json({"segmentation_run_ids": [run_id]})))[0]["id"]
    task_ids = [dbconn.insert(
        "INSERT INTO labeling_tasks (labeling_job_id, roi_id) VALUES (%s, %s) RETURNING id",
        (job_id, roi_id))[0]["id"] for roi_id in roi_ids]
    artifact_dir.mkdir(parents=True, exist_ok=True)
    clip = artifact_dir / "clip.webm"
    if not clip.exists():
        write_clip(clip)
    for roi_id in roi_ids:
        manifest = write_artifacts(artifact_dir / str(roi_id), roi_id, 851_000_001, clip)
        dbconn.execute(
            "INSERT INTO roi_manifests (roi_id, manifest, artifact_dir, artifact_digest, "
            "code_version) VALUES (%s, %s, %s, 'artifacts', 'test')",
            (roi_id, Json(manifest), str(artifact_dir)))
    return {"job_id": job_id, "run_id": run_id, "roi_ids": roi_ids, "task_ids": task_ids,
            "artifact_dir": artifact_dir}

