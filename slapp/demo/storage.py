"""The demo's LIMS-like storage tree and the synthetic movies in it.

A real LIMS keeps each experiment's files under its ``storage_directory``::

    <storage_root>/specimen_<id>/ophys_session_<id>/ophys_experiment_<id>/
        processed/motion_corrected_video.h5     (most projects)
        processed/concat_31Hz_0.h5              (multiscope sessions)

The demo LIMS (:mod:`slapp.demo.populate_lims`) points every experiment at
such a directory, but movies are generated only for the experiments that the
demo segments (:func:`ensure_movies`), each with its ground-truth masks beside
it (:func:`slapp.demo.synthetic_movie.ground_truth_path`). A movie that exists
with its ground truth and was generated from the same spec (preset, size,
frames, seed) is kept, so a second demo run generates nothing; one generated
from another spec is generated again.
"""
import logging
from dataclasses import dataclass
from pathlib import Path

import marshmallow as mm

from slapp.demo.synthetic_movie import (PRESETS, MovieSpec, ground_truth_path, preset_spec,
                                        read_movie_spec, write_movie)
from slapp.errors import SlappError
from slapp.utils.query_utils import DbConnection

logger = logging.getLogger(__name__)

# Mesoscope (multiscope) sessions were split and concatenated into this name;
# every other project keeps the motion-corrected movie.
CONCATENATED_MOVIE_PROJECTS = ("VisualBehaviorMultiscope",)
CONCATENATED_MOVIE_NAME = "concat_31Hz_0.h5"
MOTION_CORRECTED_MOVIE_NAME = "motion_corrected_video.h5"


class DemoStorageException(SlappError):
    """The demo's movies cannot be located or generated."""


@dataclass(frozen=True)
class DemoMovie:
    """One generated (or kept) demo movie.

    Attributes
    ----------
    experiment_id : int
        ``ophys_experiments.id``.
    movie_path, ground_truth_path : pathlib.Path
        The movie HDF5 file and its ground-truth masks.
    generated : bool
        False when both files existed already, from the same spec, and were kept.
    """

    experiment_id: int
    movie_path: Path
    ground_truth_path: Path
    generated: bool


class DemoMovieOptions(mm.Schema):
    """The options of the commands that write demo movies (run_demo, populate_lims)."""

    frame_size = mm.fields.Int(
        dump_default=128, validate=mm.validate.Range(min=32),
        metadata={"description": "height and width of generated movies in pixels. 128 px "
                                 "is a 100 um crop of an Allen field: a few dozen cells, "
                                 "segmented in seconds. An existing movie of another size "
                                 "or preset is generated again (and run_demo segments it "
                                 "again)"})
    preset = mm.fields.Str(
        dump_default="easy", validate=mm.validate.OneOf(PRESETS),
        metadata={"description": "kind of synthetic movie. easy: bright, busy, well separated "
                                 "cells, segmented well in seconds (a quick first run); "
                                 "realistic: dense, overlapping, partly dim or silent cells "
                                 "firing sparsely among out-of-focus blobs and dendrites, "
                                 "as hard as real data, so its F1 is the honest figure"})


def experiment_storage_directory(storage_root: Path, specimen_id: int, session_id: int,
                                 experiment_id: int) -> Path:
    """Return an experiment's storage directory, laid out as LIMS lays it out.

    Parameters
    ----------
    storage_root : pathlib.Path
        Top of the storage tree.
    specimen_id, session_id, experiment_id : int
        The LIMS ids that name the nested directories.

    Returns
    -------
    pathlib.Path
        ``<storage_root>/specimen_<id>/ophys_session_<id>/ophys_experiment_<id>``.
    """
    return (Path(storage_root) / f"specimen_{specimen_id}" / f"ophys_session_{session_id}"
            / f"ophys_experiment_{experiment_id}")


def movie_relative_path(project_code: str) -> Path:
    """Return where, inside an experiment's storage directory, its movie lies.

    Parameters
    ----------
    project_code : str
        ``projects.code`` of the experiment's session.

    Returns
    -------
    pathlib.Path
        ``processed/concat_31Hz_0.h5`` for multiscope projects, otherwise
        ``processed/motion_corrected_video.h5``.
    """
    name = (CONCATENATED_MOVIE_NAME if project_code in CONCATENATED_MOVIE_PROJECTS
            else MOTION_CORRECTED_MOVIE_NAME)
    return Path("processed") / name


def demo_movie_spec(experiment_id: int, nframes: int, frame_size: int,
                    preset: str = "easy") -> MovieSpec:
    """Return the synthetic movie of one experiment: its own cells, LIMS's frame count.

    Parameters
    ----------
    experiment_id : int
        Seeds the movie, so every experiment shows a different, reproducible field.
    nframes : int
        ``ophys_experiments.movie_number_of_frames``: the manifest step checks
        that the movie has exactly this many frames.
    frame_size : int
        Height and width in pixels.
    preset : {"easy", "realistic"}
        The kind of movie (:func:`slapp.demo.synthetic_movie.preset_spec`).

    Returns
    -------
    MovieSpec
        The preset (31 Hz, GCaMP-like transients, neuropil, shot noise,
        bleaching) with this seed and size.
    """
    return preset_spec(preset, nframes, frame_size, frame_size, experiment_id % 2**32)


def ensure_movies(lims_dbconn: DbConnection, experiment_ids: list[int],
                  frame_size: int, preset: str = "easy") -> list[DemoMovie]:
    """Generate the movie and ground truth of each experiment unless both exist as wanted.

    Where and how long each movie is comes from LIMS (``storage_directory``,
    ``movie_number_of_frames``), and its file name from the session's project
    (:func:`movie_relative_path`). Every experiment is checked before any file
    is written.

    Parameters
    ----------
    lims_dbconn : DbConnection
        The (demo) LIMS database; read only.
    experiment_ids : list of int
        The experiments to provide movies for, e.g. a selection's sub-selected ids.
    frame_size : int
        Height and width of generated movies in pixels.
    preset : {"easy", "realistic"}
        The kind of movie. An existing movie made from another spec (preset,
        size, frame count) is generated again.

    Returns
    -------
    list of DemoMovie
        In the order of ``experiment_ids``.

    Raises
    ------
    DemoStorageException
        If LIMS lacks an experiment, or one has no storage directory or frame count.
    """
    rows = lims_dbconn.query(
        "SELECT oe.id, oe.movie_number_of_frames AS nframes, oe.storage_directory, "
        "projects.code AS project FROM ophys_experiments AS oe "
        "JOIN ophys_sessions AS os ON os.id = oe.ophys_session_id "
        "JOIN projects ON projects.id = os.project_id WHERE oe.id = ANY(%s)",
        (list(experiment_ids),))
    by_id = {row["id"]: row for row in rows}
    missing = [str(experiment_id) for experiment_id in experiment_ids
               if experiment_id not in by_id]
    if missing:
        raise DemoStorageException(f"LIMS has no experiment {', '.join(missing)}")
    incomplete = [str(row["id"]) for row in rows
                  if not row["storage_directory"] or not row["nframes"]]
    if incomplete:
        raise DemoStorageException(
            f"LIMS gives no storage_directory or movie_number_of_frames for experiment "
            f"{', '.join(incomplete)}")

    movies = []
    for experiment_id in experiment_ids:
        row = by_id[experiment_id]
        movie_path = Path(row["storage_directory"]) / movie_relative_path(row["project"])
        truth_path = ground_truth_path(movie_path)
        spec = demo_movie_spec(experiment_id, row["nframes"], frame_size, preset)
        generated = not (truth_path.is_file() and read_movie_spec(movie_path) == spec)
        if generated:
            logger.info("generating %s (%s, %d frames)", movie_path, preset, row["nframes"])
            movie_path.parent.mkdir(parents=True, exist_ok=True)
            write_movie(movie_path, spec)
        else:
            logger.info("keeping %s", movie_path)
        movies.append(DemoMovie(experiment_id, movie_path, truth_path, generated))
    return movies
