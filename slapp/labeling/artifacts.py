"""Write the files a labeler looks at for each ROI of a labeling job (or of one run).

::

    python -m slapp.labeling.artifacts --labeling_job pilot --output_dir artifacts/
    python -m slapp.labeling.artifacts --segmentation_run_id 3 --output_dir artifacts/ \\
        --output_manifest artifacts/manifest.jsonl --workers 4

For every ROI, in ``<output_dir>/run_<run id>_<digest>/`` (the digest names the
artifact settings), the original toolkit's file set, named as it named them
with ``<experiment id>_<roi id>`` (``rois.id``):

* ``max_*.png``, ``avg_*.png``, ``corr_*.png``: ``crop_shape`` crops of the max
  projection, mean image and correlation image, centred on the ROI's centroid,
  zero-padded at the edges of the field of view;
* ``mask_*.png``: the weighted mask in the same window (transparent outside);
* ``outline_*.png``: its outline with a 10 µm scale bar; ``full_outline_*.png``:
  the outline in the whole field of view with a 40 µm bar;
* ``video_*.webm``: a VP9 clip of the cropped movie, ``clip_seconds`` around the
  ROI's strongest transient, frames averaged to about ``clip_fps`` and played in
  real time; ``trace_*.json``: ``{"pointStart", "pointInterval", "dataLength",
  "trace"}``, the ROI's trace averaged the same way over exactly the clip's span
  (seconds from the movie's start, one point per clip frame);
* and one ``full_video.webm`` of the whole field per run.

Intensities are clipped to quantiles and stretched to 0-255 as the original did:
the movie by the mean image's ``movie_quantiles``, each projection by its own
``projection_quantiles``; the cut-offs are recorded. The images come from
``segmentation_images`` (stored by ``segment``); a run stored before has them
computed from its movie first (one extra streamed pass) and stored with
``computed_by = 'artifacts'``. Each run's movie is then streamed once for all its
ROIs, never held in memory: a process holds a few blocks of a few hundred frames,
the uint8 crops of the clips that the current frame falls in (each clip is encoded
once its last frame has passed), one ROI's trace at a time and the run's images,
whatever the movie's length. Runs are processed ``--workers`` at a time, each in
its own process.

Each ROI gets a ``roi_manifests`` row: the manifest with the original's keys
(``experiment-id``, ``roi-id``, ``source-ref`` (the outline),
``roi-mask-source-ref``, ``max-source-ref``, ``avg-source-ref``,
``full-outline-source-ref``, ``trace-source-ref``, ``full-video-source-ref``,
``video-source-ref``) plus ``correlation-source-ref``, as absolute paths; the
settings' digest, the parameters with the cut-offs and the clip's frames, and the
code version. ``--output_manifest`` also writes them as the original's JSON-lines
file. A ROI whose row exists for these settings and code version, with its
files in place, is not redone. Every file is written beside its destination and
renamed into place; rows are written after the files.
"""
import hashlib
import json
import logging
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import argschema
import marshmallow as mm
import numpy as np
import psycopg2.extras
from scipy import ndimage

from slapp.errors import SlappError
from slapp.export.run_record import load_run, recorded_rate
from slapp.labeling import render
from slapp.labeling.movie import compute_images, stream_blocks
from slapp.labeling.webm import WebmWriter
from slapp.segmentation.images import insert_images, read_images
from slapp.utils.cli import require_one_of, run_main
from slapp.utils.code_version import code_version
from slapp.utils.files import json_bytes, write_bytes_atomically, write_json_atomically
from slapp.utils.query_utils import DbConnection, get_db_credentials, label_defaults
from slapp.utils.schema import (ArgSchema, ArgSchemaParser, StrictInt,
                                check_writable_location)

logger = logging.getLogger(__name__)

# The original's manifest keys, in its order, and the file each names.
MANIFEST_KEYS = ("experiment-id", "roi-id", "source-ref", "roi-mask-source-ref",
                 "max-source-ref", "avg-source-ref", "full-outline-source-ref",
                 "trace-source-ref", "full-video-source-ref", "video-source-ref")
CORRELATION_KEY = "correlation-source-ref"
FULL_VIDEO_NAME = "full_video.webm"
# File name prefix (and suffix) of each per-ROI manifest reference.
_ROI_FILES = {"source-ref": ("outline", "png"), "roi-mask-source-ref": ("mask", "png"),
              "max-source-ref": ("max", "png"), "avg-source-ref": ("avg", "png"),
              CORRELATION_KEY: ("corr", "png"), "full-outline-source-ref": ("full_outline", "png"),
              "trace-source-ref": ("trace", "json"), "video-source-ref": ("video", "webm")}
# The settings that shape the files: their digest names the artifacts.
SETTING_NAMES = ("crop_shape", "clip_seconds", "clip_fps", "full_video_fps", "webm_quality",
                 "outline_quantile", "movie_quantiles", "projection_quantiles", "um_per_pixel",
                 "scale_size_um", "full_scale_size_um", "scale_offset", "full_scale_offset")
# Seconds of trace over which the baseline under a transient is its running minimum.
BASELINE_SECONDS = 60.0
# Suite2P's default, for runs whose recorded settings lack one.
DEFAULT_NEUROPIL_COEFFICIENT = 0.7

_JOB_ROIS = """
SELECT tasks.roi_id, rois.segmentation_run_id
FROM labeling_tasks AS tasks
JOIN labeling_jobs AS jobs ON jobs.id = tasks.labeling_job_id
JOIN rois ON rois.id = tasks.roi_id
WHERE jobs.name = %s ORDER BY tasks.id
"""
_JOB_EXISTS = "SELECT id FROM labeling_jobs WHERE name = %s"
_RUN_ROIS = """
SELECT id AS roi_id, segmentation_run_id FROM rois WHERE segmentation_run_id = %s ORDER BY id
"""
_EXISTING = """
SELECT roi_id, manifest FROM roi_manifests
WHERE roi_id = ANY(%s) AND artifact_digest = %s AND code_version = %s
"""
_ROIS = """
SELECT id, coo_row, coo_col, coo_data, centroid_row, centroid_col, trace, neuropil_trace
FROM rois WHERE id = ANY(%s) ORDER BY id
"""
_UPSERT = """
INSERT INTO roi_manifests (roi_id, manifest, artifact_dir, artifact_digest, parameters,
                           code_version) VALUES %s
ON CONFLICT ON CONSTRAINT one_manifest_per_roi_and_artifacts DO UPDATE
SET manifest = EXCLUDED.manifest, artifact_dir = EXCLUDED.artifact_dir,
    parameters = EXCLUDED.parameters, created_at = now()
"""
# ROIs read from the database at a time: their traces are the large part.
_ROI_BATCH = 16


class ArtifactsException(SlappError):
    """The artifacts cannot be made as asked."""


class ArtifactsSchema(ArgSchema):
    labeling_job = mm.fields.Str(
        metadata={"description": "name of the labeling job whose ROIs get artifacts"})
    segmentation_run_id = StrictInt(
        validate=mm.validate.Range(min=1),
        metadata={"description": "instead of a job: every ROI of this run"})
    output_dir = mm.fields.Str(
        required=True, metadata={"description": "where the runs' artifact directories go "
                                                "(created if needed)"})
    output_manifest = mm.fields.Str(
        metadata={"description": "also write the manifests as the original's JSON-lines "
                                 "file, one line per ROI in task order"})
    workers = StrictInt(
        dump_default=1, load_default=1, validate=mm.validate.Range(min=1),
        metadata={"description": "runs processed at once, each in its own process reading "
                                 "its own movie. 1 by default: one movie read at a time "
                                 "keeps a shared file server's load and the memory small"})
    crop_shape = argschema.fields.List(
        StrictInt(validate=mm.validate.Range(min=8)), dump_default=[128, 128],
        load_default=[128, 128], validate=mm.validate.Length(equal=2),
        metadata={"cli_as_single_argument": True,
                  "description": "[height, width] of the crops and clips around a ROI: "
                                 "128 x 128 as in the original, 100 µm at 0.78 µm/px, a "
                                 "soma and its neighbours"})
    clip_seconds = mm.fields.Float(
        dump_default=20.0, load_default=20.0,
        validate=mm.validate.Range(min=0, min_inclusive=False),
        metadata={"description": "length of each ROI's clip, centred on its strongest "
                                 "transient: 20 s shows the transient and the quiet before "
                                 "and after it"})
    clip_fps = mm.fields.Float(
        dump_default=8.0, load_default=8.0, validate=mm.validate.Range(min=0, min_inclusive=False),
        metadata={"description": "about how many frames per second the clips and traces "
                                 "have: frames are averaged in bins of round(fs / clip_fps). "
                                 "8 (bins of 4 frames at 31 Hz) still resolves a GCaMP6 "
                                 "transient's ~0.5 s decay and halves the shot noise"})
    full_video_fps = mm.fields.Float(
        dump_default=4.0, load_default=4.0, validate=mm.validate.Range(min=0, min_inclusive=False),
        metadata={"description": "about how many frames per second the full-field video has "
                                 "(a whole number of clip bins per frame): 4 as the "
                                 "original's downsampled movie"})
    webm_quality = StrictInt(
        dump_default=40, load_default=40, validate=mm.validate.Range(min=0, max=63),
        metadata={"description": "VP9 constant quality (0-63, lower is better, bigger and "
                                 "slower to encode). 40 rather than the original's 30: "
                                 "two-photon frames are mostly shot noise, on which VP9 "
                                 "spends its bits and time at 30, while a transient shows "
                                 "as well at 40"})
    outline_quantile = mm.fields.Float(
        dump_default=0.1, load_default=0.1, validate=mm.validate.Range(min=0, max=1),
        metadata={"description": "the outline is drawn around the mask's pixels whose weight "
                                 "exceeds this quantile of its weights: 0.1 as the original, "
                                 "which leaves out the faint rim"})
    movie_quantiles = argschema.fields.List(
        mm.fields.Float(validate=mm.validate.Range(min=0, max=1)),
        dump_default=[0.1, 0.999], load_default=[0.1, 0.999],
        validate=mm.validate.Length(equal=2),
        metadata={"cli_as_single_argument": True,
                  "description": "quantiles of the mean image that the movie's black and "
                                 "white are set to: the original's 0.1 and 0.999"})
    projection_quantiles = argschema.fields.List(
        mm.fields.Float(validate=mm.validate.Range(min=0, max=1)),
        dump_default=[0.2, 0.99], load_default=[0.2, 0.99],
        validate=mm.validate.Length(equal=2),
        metadata={"cli_as_single_argument": True,
                  "description": "quantiles of each projection that its black and white are "
                                 "set to: the original's 0.2 and 0.99"})
    um_per_pixel = mm.fields.Float(
        dump_default=0.78125, load_default=0.78125,
        validate=mm.validate.Range(min=0, min_inclusive=False),
        metadata={"description": "µm per pixel of the movie, for the scale bars: Allen's "
                                 "400 µm over 512 px"})
    scale_size_um = mm.fields.Float(
        dump_default=10.0, load_default=10.0,
        metadata={"description": "scale bar of the cropped outline (µm): a soma's size"})
    full_scale_size_um = mm.fields.Float(
        dump_default=40.0, load_default=40.0,
        metadata={"description": "scale bar of the full-field outline (µm), as the original"})
    scale_offset = StrictInt(
        dump_default=3, load_default=3,
        metadata={"description": "pixels from the crop's lower left corner to the bar's "
                                 "corner, as the original"})
    full_scale_offset = StrictInt(
        dump_default=12, load_default=12,
        metadata={"description": "the same for the full-field outline, as the original"})

    @mm.validates_schema
    def one_source(self, data, **kwargs):
        require_one_of(data, "labeling_job", "segmentation_run_id")


class ArtifactsOutputSchema(mm.Schema):
    n_rois = mm.fields.Int(required=True)
    n_made = mm.fields.Int(required=True, metadata={"description": "ROIs whose files were "
                                                                   "written by this call"})
    n_runs = mm.fields.Int(required=True)
    manifest_path = mm.fields.Str(allow_none=True)


@dataclass(frozen=True)
class RunResult:
    """What one run's worker did: the manifests of its ROIs and how many it made."""

    segmentation_run_id: int
    manifests: dict
    n_made: int


def settings_digest(settings: dict, output_dir: Path) -> str:
    """SHA-256 of the artifact settings and the output directory: what names the files."""
    document = {"output_dir": str(output_dir), **{name: settings[name]
                                                  for name in SETTING_NAMES}}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def _roi_paths(run_dir: Path, experiment_id: int, roi_id: int) -> dict:
    return {key: run_dir / f"{prefix}_{experiment_id}_{roi_id}.{suffix}"
            for key, (prefix, suffix) in _ROI_FILES.items()}


def _manifest(experiment_id: int, roi_id: int, paths: dict, full_video: Path) -> dict:
    """The original's manifest line (its keys in its order), then the correlation crop."""
    refs = {**{key: str(path) for key, path in paths.items()},
            "full-video-source-ref": str(full_video)}
    return {"experiment-id": experiment_id, "roi-id": roi_id,
            **{key: refs[key] for key in MANIFEST_KEYS[2:]},
            CORRELATION_KEY: refs[CORRELATION_KEY]}


def in_manifest_order(manifest: dict) -> dict:
    """The manifest with the original's keys in its order (``jsonb`` does not keep it)."""
    return {key: manifest[key] for key in (*MANIFEST_KEYS, CORRELATION_KEY) if key in manifest}


def _files_exist(manifest: dict) -> bool:
    return all(Path(manifest[key]).is_file() for key in (*MANIFEST_KEYS[2:], CORRELATION_KEY)
               if key in manifest)


def binned(values: np.ndarray, bin_frames: int, nbins: int) -> np.ndarray:
    """Means of ``values`` over consecutive bins of ``bin_frames`` (the first ``nbins``)."""
    return np.asarray(values[:nbins * bin_frames], np.float32).reshape(
        nbins, bin_frames).mean(axis=1)


def strongest_transient(trace: np.ndarray, neuropil: np.ndarray, coefficient: float,
                        baseline_bins: int) -> int:
    """The bin where the neuropil-corrected trace rises most above its running baseline
    (the running minimum over ``baseline_bins``, smoothed), so slow drifts do not count."""
    corrected = trace - np.float32(coefficient) * neuropil
    size = max(3, min(baseline_bins, len(corrected)))
    baseline = ndimage.uniform_filter1d(ndimage.minimum_filter1d(corrected, size), size)
    return int(np.argmax(corrected - baseline))


def clip_span(peak: int, clip_bins: int, nbins: int) -> tuple[int, int]:
    """``[start, stop)`` bins of the clip: ``clip_bins`` long, centred on ``peak``, inside
    the movie."""
    length = min(clip_bins, nbins)
    start = min(max(peak - length // 2, 0), nbins - length)
    return start, start + length


class _Clip:
    """One ROI's clip: its bins and window, and its frames while the stream passes them.

    The frames are kept as uint8 crops until the clip's last one has passed and then
    encoded at once: a crop buffer (16 KiB a frame at 128 x 128) is far smaller than
    an open VP9 encoder (~9 MiB), and many clips overlap in time.
    """

    def __init__(self, roi_id: int, start: int, stop: int, window: render.Window, path: Path):
        self.roi_id, self.start, self.stop = roi_id, start, stop
        self.window, self.path = window, path
        self.frames: np.ndarray | None = None


def make_run_artifacts(credentials: dict, segmentation_run_id: int, roi_ids: list[int],
                       output_dir: str, settings: dict) -> RunResult:
    """Make (or find) the artifacts of some ROIs of one run, streaming its movie once.

    Parameters
    ----------
    credentials : dict
        Keyword arguments of :class:`DbConnection` for the labeling database (each
        worker process opens its own connection).
    segmentation_run_id : int
        The run.
    roi_ids : list of int
        ``rois.id`` of the ROIs of this run that need artifacts.
    output_dir : str
        The base directory.
    settings : dict
        The artifact settings (:data:`SETTING_NAMES`).

    Returns
    -------
    RunResult
    """
    with DbConnection(**credentials) as dbconn:
        return _RunArtifacts(dbconn, segmentation_run_id, Path(output_dir), settings).make(
            roi_ids)


class _RunArtifacts:
    def __init__(self, dbconn: DbConnection, run_id: int, output_dir: Path, settings: dict):
        self.dbconn, self.run_id, self.settings = dbconn, run_id, settings
        self.run = load_run(dbconn, run_id)
        self.experiment_id = int(self.run["ophys_experiment_id"])
        self.digest = settings_digest(settings, output_dir)
        self.version = code_version()
        self.run_dir = output_dir / f"run_{run_id}_{self.digest[:8]}"
        self.full_video = self.run_dir / FULL_VIDEO_NAME
        self.fs = recorded_rate(self.run)
        nframes = int(self.run["nframes"])
        self.clip_bin = max(1, min(nframes, round(self.fs / settings["clip_fps"])))
        self.clip_rate = self.fs / self.clip_bin
        self.full_factor = max(1, round(self.clip_rate / settings["full_video_fps"]))
        self.nbins = nframes // self.clip_bin
        self.clip_bins = max(1, round(settings["clip_seconds"] * self.clip_rate))
        recorded = (self.run["suite2p_settings"] or {}).get("settings") or {}
        self.neuropil_coefficient = (recorded.get("extraction") or {}).get(
            "neuropil_coefficient", DEFAULT_NEUROPIL_COEFFICIENT)

    def make(self, roi_ids: list[int]) -> RunResult:
        done = {row["roi_id"]: in_manifest_order(row["manifest"])
                for row in self.dbconn.query(_EXISTING, (roi_ids, self.digest, self.version))
                if _files_exist(row["manifest"])}
        todo = [roi_id for roi_id in roi_ids if roi_id not in done]
        if not todo:
            logger.info("run %d: the artifacts of its %d ROIs exist", self.run_id, len(roi_ids))
            return RunResult(self.run_id, done, 0)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        images = self._images()
        parameters = self._parameters(images)
        stills = {name: render.normalize(image, parameters[f"{name}_cutoffs"])
                  for name, image in (("max", images.max_projection), ("avg", images.mean_image),
                                      ("correlation", images.correlation_image))}
        clips, rows, made = [], [], {}
        for roi in self._rois(todo):
            paths = _roi_paths(self.run_dir, self.experiment_id, roi["id"])
            clip = self._stills_and_trace(roi, paths, stills)
            clips.append(clip)
            made[roi["id"]] = _manifest(self.experiment_id, roi["id"], paths, self.full_video)
            rows.append((roi["id"], clip))
        self._stream(clips, parameters["movie_cutoffs"])
        self._store(rows, made, parameters)
        logger.info("run %d: wrote the artifacts of %d ROIs in %s", self.run_id, len(made),
                    self.run_dir)
        return RunResult(self.run_id, {**done, **made}, len(made))

    def _images(self):
        images = read_images(self.dbconn, self.run_id)
        if images is None:
            movie = Path(self.run["source_video_path"])
            logger.info("run %d has no stored images: computing them from %s", self.run_id,
                        movie)
            with self.dbconn.transaction() as cursor:
                insert_images(cursor, self.run_id,
                              compute_images(movie, self.clip_bin * self.full_factor))
            images = read_images(self.dbconn, self.run_id)
        return images

    def _parameters(self, images) -> dict:
        settings = self.settings
        projection = tuple(settings["projection_quantiles"])
        return {**{name: settings[name] for name in SETTING_NAMES},
                "frame_rate": self.fs, "clip_bin_frames": self.clip_bin,
                "clip_frame_rate": self.clip_rate,
                "full_video_bin_frames": self.clip_bin * self.full_factor,
                "full_video_frame_rate": self.clip_rate / self.full_factor,
                "images_computed_by": images.computed_by,
                "movie_cutoffs": render.quantile_cutoffs(images.mean_image,
                                                         tuple(settings["movie_quantiles"])),
                "max_cutoffs": render.quantile_cutoffs(images.max_projection, projection),
                "avg_cutoffs": render.quantile_cutoffs(images.mean_image, projection),
                "correlation_cutoffs": render.quantile_cutoffs(images.correlation_image,
                                                               projection)}

    def _rois(self, roi_ids: list[int]):
        for start in range(0, len(roi_ids), _ROI_BATCH):
            yield from self.dbconn.query(_ROIS, (roi_ids[start:start + _ROI_BATCH],))

    def _stills_and_trace(self, roi: dict, paths: dict, stills: dict) -> _Clip:
        settings, shape = self.settings, tuple(self.run["video_shape"])
        crop = tuple(settings["crop_shape"])
        window = render.centred_window(roi["centroid_row"], roi["centroid_col"], crop)
        rows, cols = np.asarray(roi["coo_row"]), np.asarray(roi["coo_col"])
        weights = render.dense_mask(rows, cols, np.asarray(roi["coo_data"], np.float32), shape)
        binary = render.binary_mask(weights, settings["outline_quantile"])
        for key, name in (("max-source-ref", "max"), ("avg-source-ref", "avg"),
                          (CORRELATION_KEY, "correlation")):
            write_bytes_atomically(paths[key], render.png_bytes(window.crop(stills[name])))
        mask = window.crop(weights)
        brightest = mask.max()
        mask = np.round(mask * (255 / brightest) if brightest > 0 else mask).astype(np.uint8)
        write_bytes_atomically(paths["roi-mask-source-ref"], render.png_bytes(mask, 0))
        bar = {"um_per_pixel": settings["um_per_pixel"]}
        outline = render.add_scale_bar(render.outline_image(window.crop(binary)),
                                       settings["scale_offset"], length_um=
                                       settings["scale_size_um"], thickness_um=1.0,
                                       font_scale=0.3, **bar)
        write_bytes_atomically(paths["source-ref"], render.png_bytes(outline, 255))
        full = render.add_scale_bar(render.outline_image(binary), settings["full_scale_offset"],
                                    length_um=settings["full_scale_size_um"], thickness_um=1.5,
                                    font_scale=0.8, **bar)
        write_bytes_atomically(paths["full-outline-source-ref"], render.png_bytes(full, 255))
        trace = binned(roi["trace"], self.clip_bin, self.nbins)
        neuropil = binned(roi["neuropil_trace"], self.clip_bin, self.nbins)
        peak_bin = strongest_transient(trace, neuropil, self.neuropil_coefficient,
                                       round(BASELINE_SECONDS * self.clip_rate))
        start, stop = clip_span(peak_bin, self.clip_bins, self.nbins)
        write_bytes_atomically(paths["trace-source-ref"], json_bytes({
            "pointStart": start * self.clip_bin / self.fs,
            "pointInterval": 1.0 / self.clip_rate,
            "dataLength": stop - start,
            "trace": [round(float(value), 3) for value in trace[start:stop]]}))
        return _Clip(roi["id"], start, stop, window, paths["video-source-ref"])

    def _stream(self, clips: list[_Clip], cutoffs: tuple[float, float]) -> None:
        """One pass over the movie: every clip and the full-field video."""
        height, width = self.run["video_shape"]
        pending = sorted(clips, key=lambda clip: clip.start)
        active: list[_Clip] = []
        quality, crop = self.settings["webm_quality"], tuple(self.settings["crop_shape"])
        with WebmWriter(self.full_video, (height, width), self.clip_rate / self.full_factor,
                        quality) as full:
            for block in stream_blocks(Path(self.run["source_video_path"]), self.clip_bin,
                                       self.full_factor):
                whole = len(block.binned) // self.full_factor * self.full_factor
                for frame in block.binned[:whole].reshape(
                        -1, self.full_factor, height, width).mean(axis=1):
                    full.write(render.normalize(frame, cutoffs))
                for offset, frame in enumerate(block.binned):
                    index = block.first_bin + offset
                    while pending and pending[0].start == index:
                        clip = pending.pop(0)
                        clip.frames = np.empty((clip.stop - clip.start, *crop), np.uint8)
                        active.append(clip)
                    for clip in active:
                        clip.frames[index - clip.start] = render.normalize(
                            clip.window.crop(frame), cutoffs)
                    for clip in [clip for clip in active if clip.stop == index + 1]:
                        with WebmWriter(clip.path, crop, self.clip_rate, quality) as writer:
                            for clip_frame in clip.frames:
                                writer.write(clip_frame)
                        clip.frames = None
                        active.remove(clip)

    def _store(self, rows: list, manifests: dict, parameters: dict) -> None:
        values = []
        for roi_id, clip in rows:
            roi_parameters = {**parameters, "clip_start_frame": clip.start * self.clip_bin,
                              "clip_stop_frame": clip.stop * self.clip_bin}
            values.append((roi_id, psycopg2.extras.Json(manifests[roi_id]), str(self.run_dir),
                           self.digest, psycopg2.extras.Json(roi_parameters), self.version))
        with self.dbconn.transaction() as cursor:
            psycopg2.extras.execute_values(cursor, _UPSERT, values, page_size=500)


def rois_by_run(dbconn: DbConnection, labeling_job: str | None,
                segmentation_run_id: int | None) -> tuple[list[int], dict[int, list[int]]]:
    """The ROIs to make artifacts for, in task (or id) order, and grouped by run.

    Raises
    ------
    ArtifactsException
        If the job or run does not exist, or has no ROI.
    """
    if labeling_job is not None:
        if not dbconn.query(_JOB_EXISTS, (labeling_job,)):
            raise ArtifactsException(f"there is no labeling job named {labeling_job!r}")
        rows = dbconn.query(_JOB_ROIS, (labeling_job,))
    else:
        load_run(dbconn, segmentation_run_id)
        rows = dbconn.query(_RUN_ROIS, (segmentation_run_id,))
        if not rows:
            raise ArtifactsException(f"segmentation run {segmentation_run_id} has no ROIs")
    by_run: dict[int, list[int]] = {}
    for row in rows:
        by_run.setdefault(row["segmentation_run_id"], []).append(row["roi_id"])
    return [row["roi_id"] for row in rows], by_run


class Artifacts(ArgSchemaParser):
    """Write the labeling artifacts."""

    default_schema = ArtifactsSchema
    default_output_schema = ArtifactsOutputSchema

    def run(self, label_dbconn: DbConnection, credentials: dict) -> dict:
        """Make the artifacts of every ROI asked for; print a summary line.

        Parameters
        ----------
        label_dbconn : DbConnection
            The labeling database.
        credentials : dict
            Its connection keywords, for the worker processes.

        Returns
        -------
        dict
            See :class:`ArtifactsOutputSchema`.
        """
        args = self.args
        output_dir = Path(args["output_dir"]).absolute()
        if output_dir.exists() and not output_dir.is_dir():
            raise ArtifactsException(f"output_dir {output_dir} is not a directory")
        order, by_run = rois_by_run(label_dbconn, args.get("labeling_job"),
                                    args.get("segmentation_run_id"))
        for run_id in by_run:  # a bad run fails before any file is written
            recorded_rate(load_run(label_dbconn, run_id))
        output_dir.mkdir(parents=True, exist_ok=True)
        manifest_path = args.get("output_manifest")
        if manifest_path:  # checked before the work (it may go in output_dir, made just now)
            check_writable_location(manifest_path)
        settings = {name: args[name] for name in SETTING_NAMES}
        jobs = [(credentials, run_id, roi_ids, str(output_dir), settings)
                for run_id, roi_ids in by_run.items()]
        if args["workers"] == 1 or len(jobs) == 1:
            results = [make_run_artifacts(*job) for job in jobs]
        else:
            with ProcessPoolExecutor(min(args["workers"], len(jobs)),
                                     mp_context=multiprocessing.get_context("spawn")) as pool:
                results = list(pool.map(make_run_artifacts, *zip(*jobs)))
        manifests = {roi_id: manifest for result in results
                     for roi_id, manifest in result.manifests.items()}
        made = sum(result.n_made for result in results)
        if manifest_path:
            lines = "".join(json.dumps(manifests[roi_id]) + "\n" for roi_id in order)
            write_bytes_atomically(manifest_path, lines.encode("utf-8"))
        print(f"artifacts: {len(order)} ROIs of {len(by_run)} run(s) in {output_dir}: "
              f"{made} made, {len(order) - made} already there"
              + (f"; manifest {manifest_path}" if manifest_path else ""))
        output = {"n_rois": len(order), "n_made": made, "n_runs": len(by_run),
                  "manifest_path": str(manifest_path) if manifest_path else None}
        if args.get("output_json"):
            write_json_atomically(args["output_json"], self.get_output_json(output))
        return output


def main() -> None:  # pragma: no cover - thin CLI
    """Run the command with the labeling database from the environment."""
    parser = Artifacts(logger_name="Artifacts")
    credentials = get_db_credentials(**label_defaults)
    with DbConnection(**credentials) as label_dbconn:
        parser.run(label_dbconn, credentials)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "artifacts"))
