"""What the labeling page shows of one task: its files, trace, masks and correlation crop.

The files come from the ROI's newest ``roi_manifests`` row (the original
toolkit's keys), each turned into a URL under ``/artifacts/`` when it lies in
an artifact directory the server serves. The trace, the ROI's mask and its
neighbours' masks, and the correlation projection are read from the database,
so the page can draw them over the 128 x 128 crop the artifacts are cut to
(centred on the ROI's centroid, as the artifacts step writes them).
"""
import io
import posixpath
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import numpy as np

# The artifacts' crop: 128 x 128 pixels centred on the ROI's centroid.
CROP_SIZE = 128

# The manifest keys the page shows, and what the page calls them.
MANIFEST_VIEWS = {
    "video-source-ref": "clip",
    "avg-source-ref": "avg",
    "max-source-ref": "max",
    "correlation-source-ref": "correlation",
    "source-ref": "outline",
    "roi-mask-source-ref": "mask",
    "full-outline-source-ref": "full_outline",
    "trace-source-ref": "clip_trace",
    "full-video-source-ref": "full_clip",
}

TASK_QUERY = """
SELECT tasks.id AS labeling_task_id, tasks.roi_id, tasks.labeling_job_id,
       jobs.name AS labeling_job, jobs.labels_per_roi + tasks.extra_labels AS quota,
       runs.id AS segmentation_run_id, runs.ophys_experiment_id AS experiment_id,
       runs.video_shape, rois.centroid_row, rois.centroid_col,
       manifests.manifest, manifests.artifact_dir,
       images.segmentation_run_id IS NOT NULL AS has_images,
       (SELECT count(*) FROM roi_labels AS labels WHERE labels.labeling_task_id = tasks.id
          AND labels.superseded_by IS NULL AND labels.label IS NOT NULL) AS n_labels,
       own.label AS my_label, own.note AS my_note
FROM labeling_tasks AS tasks
JOIN labeling_jobs AS jobs ON jobs.id = tasks.labeling_job_id
JOIN rois ON rois.id = tasks.roi_id
JOIN segmentation_runs AS runs ON runs.id = rois.segmentation_run_id
LEFT JOIN segmentation_images AS images ON images.segmentation_run_id = runs.id
LEFT JOIN LATERAL (SELECT manifest, artifact_dir FROM roi_manifests
                   WHERE roi_manifests.roi_id = tasks.roi_id
                   ORDER BY created_at DESC, id DESC LIMIT 1) AS manifests ON true
LEFT JOIN roi_labels AS own ON own.labeling_task_id = tasks.id
     AND own.labeler_id = %(labeler_id)s AND own.superseded_by IS NULL
WHERE tasks.id = %(task_id)s AND tasks.labeling_job_id = ANY(%(job_ids)s::int[])
"""

TRACE_QUERY = """
SELECT rois.trace,
       coalesce(runs.suite2p_settings #>> '{settings,fs}',
                runs.suite2p_settings #>> '{db,fs}')::float AS fs
FROM labeling_tasks AS tasks JOIN rois ON rois.id = tasks.roi_id
JOIN segmentation_runs AS runs ON runs.id = rois.segmentation_run_id
WHERE tasks.id = %(task_id)s AND tasks.labeling_job_id = ANY(%(job_ids)s::int[])
"""

# The ROI and every ROI of its run whose centroid is near enough to touch the crop.
MASKS_QUERY = """
SELECT others.id AS roi_id, others.coo_row, others.coo_col, rois.id AS target_id,
       rois.centroid_row, rois.centroid_col
FROM labeling_tasks AS tasks JOIN rois ON rois.id = tasks.roi_id
JOIN rois AS others ON others.segmentation_run_id = rois.segmentation_run_id
WHERE tasks.id = %(task_id)s AND tasks.labeling_job_id = ANY(%(job_ids)s::int[])
  AND abs(others.centroid_row - rois.centroid_row) < %(reach)s
  AND abs(others.centroid_col - rois.centroid_col) < %(reach)s
ORDER BY others.id = rois.id DESC, others.id
"""

CORRELATION_QUERY = """
SELECT images.correlation_image, runs.video_shape, rois.centroid_row, rois.centroid_col
FROM labeling_tasks AS tasks JOIN rois ON rois.id = tasks.roi_id
JOIN segmentation_runs AS runs ON runs.id = rois.segmentation_run_id
JOIN segmentation_images AS images ON images.segmentation_run_id = runs.id
WHERE tasks.id = %(task_id)s AND tasks.labeling_job_id = ANY(%(job_ids)s::int[])
"""


def crop_origin(centroid_row: float, centroid_col: float, size: int = CROP_SIZE) -> tuple:
    """The (row, col) of the crop's top-left pixel in the full frame (may be negative)."""
    return int(round(centroid_row)) - size // 2, int(round(centroid_col)) - size // 2


def artifact_url(path: str, artifact_dir: str, roots: list[str],
                 override: bool) -> str | None:
    """The URL the server serves a manifest's file at, or None if it serves no such file.

    Parameters
    ----------
    path : str
        The manifest's absolute path (an ``s3://`` URI is not served).
    artifact_dir : str
        The directory the manifest row says the files were written to (the
        artifacts step writes one per run, inside its ``--output_dir``).
    roots : list of str
        The directories served (as ``str(Path(...))`` writes them),
        ``/artifacts/<index>/...``.
    override : bool
        True when ``roots`` is the one directory given on the command line: the
        moved ``artifact_dir`` itself, or the moved directory holding it.
    """
    try:
        relative = PurePosixPath(posixpath.normpath(path)).relative_to(
            posixpath.normpath(artifact_dir))
    except ValueError:
        return None
    if override:
        run_dir = PurePosixPath(posixpath.normpath(artifact_dir)).name
        if (Path(roots[0]) / run_dir).is_dir():
            relative = PurePosixPath(run_dir) / relative
        index = 0
    elif str(Path(artifact_dir)) in roots:
        index = roots.index(str(Path(artifact_dir)))
    else:
        return None
    return f"/artifacts/{index}/{quote(relative.as_posix())}"


def task_view(cursor, task_id: int, labeler_id: int, job_ids: list[int], roots: list[str],
              override: bool) -> dict | None:
    """Everything the page needs to show one task, or None if it is not one of these jobs.

    Returns
    -------
    dict or None
        Ids, quota and label count, the labeler's own current label and note,
        ``urls`` (page view name -> URL or None) and the crop's geometry.
    """
    cursor.execute(TASK_QUERY, {"task_id": task_id, "labeler_id": labeler_id,
                                "job_ids": list(job_ids)})
    row = cursor.fetchone()
    if row is None:
        return None
    manifest = row["manifest"] or {}
    urls = {name: (artifact_url(manifest[key], row["artifact_dir"], roots, override)
                   if isinstance(manifest.get(key), str) else None)
            for key, name in MANIFEST_VIEWS.items()}
    if urls["correlation"] is None and row["has_images"]:
        urls["correlation"] = f"/api/tasks/{task_id}/correlation.png"
    origin = crop_origin(row["centroid_row"], row["centroid_col"])
    return {
        "labeling_task_id": row["labeling_task_id"], "roi_id": row["roi_id"],
        "labeling_job": row["labeling_job"], "experiment_id": row["experiment_id"],
        "segmentation_run_id": row["segmentation_run_id"], "quota": row["quota"],
        "n_labels": row["n_labels"], "my_label": row["my_label"], "my_note": row["my_note"],
        "urls": urls,
        "crop": {"row": origin[0], "col": origin[1], "size": CROP_SIZE,
                 "video_shape": row["video_shape"]},
    }


def trace(cursor, task_id: int, job_ids: list[int]) -> dict | None:
    """The ROI's whole trace and the movie's frame rate (None if unknown)."""
    cursor.execute(TRACE_QUERY, {"task_id": task_id, "job_ids": list(job_ids)})
    row = cursor.fetchone()
    return None if row is None else {"fs": row["fs"], "trace": row["trace"]}


def masks(cursor, task_id: int, job_ids: list[int]) -> dict | None:
    """The ROI's pixels and those of its run's neighbours, in the crop's coordinates.

    Returns
    -------
    dict or None
        ``roi``: ``[[row, col], ...]`` of the ROI; ``neighbours``: one such
        list per other ROI with a pixel inside the crop.
    """
    cursor.execute(MASKS_QUERY, {"task_id": task_id, "job_ids": list(job_ids),
                                 "reach": CROP_SIZE})
    found = cursor.fetchall()
    if not found:
        return None
    row0, col0 = crop_origin(found[0]["centroid_row"], found[0]["centroid_col"])
    inside = []
    for row in found:
        rows = np.asarray(row["coo_row"]) - row0
        cols = np.asarray(row["coo_col"]) - col0
        keep = (rows >= 0) & (rows < CROP_SIZE) & (cols >= 0) & (cols < CROP_SIZE)
        if row["roi_id"] == row["target_id"] or keep.any():
            inside.append((row["roi_id"], np.stack([rows[keep], cols[keep]], 1).tolist()))
    return {"roi": inside[0][1], "neighbours": [pixels for _, pixels in inside[1:]]}


def correlation_png(cursor, task_id: int, job_ids: list[int]) -> bytes | None:
    """The run's correlation image cropped around the ROI, as an 8-bit grey PNG.

    The crop is padded with the image's minimum at the frame's edges and
    scaled between its 1st and 99th percentiles, so one bright pixel does not
    darken the rest. None when the task or its run's images are missing.
    """
    from PIL import Image

    cursor.execute(CORRELATION_QUERY, {"task_id": task_id, "job_ids": list(job_ids)})
    row = cursor.fetchone()
    if row is None:
        return None
    image = np.asarray(row["correlation_image"], np.float32).reshape(row["video_shape"])
    row0, col0 = crop_origin(row["centroid_row"], row["centroid_col"])
    crop = np.full((CROP_SIZE, CROP_SIZE), image.min(), np.float32)
    top, left = max(row0, 0), max(col0, 0)
    bottom = min(row0 + CROP_SIZE, image.shape[0])
    right = min(col0 + CROP_SIZE, image.shape[1])
    if bottom > top and right > left:
        crop[top - row0:bottom - row0, left - col0:right - col0] = image[top:bottom, left:right]
    low, high = np.percentile(crop, [1, 99])
    scaled = np.clip((crop - low) / max(high - low, 1e-12), 0, 1)
    buffer = io.BytesIO()
    Image.fromarray((scaled * 255).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
