"""Suite2P's own classifier file: writing it from labels, reading it, naming it by digest.

Suite2P keeps a cell classifier as its training data, not as fitted weights: a
``.npy`` holding the dictionary ``{"stats": (n, k) float64, "iscell": (n,)
float32, "keys": [k stat names]}``. Whoever loads it
(``suite2p.classification.Classifier``, its GUI, the pipeline's
``classifier_path`` setting) fits the same model on it: each feature binned
into 100 quantile nodes, a smoothed naive-Bayes log-odds per bin, and a
logistic regression over those. A file written here therefore *is* the
trained classifier, and every probability slapp stores is computed by
Suite2P's ``Classifier`` from it, exactly as Suite2P would.

The pipeline classifies with ``skew``, ``npix_norm`` and ``compact`` only
(``suite2p.classification.classify`` keeps the file's keys among those three),
so :data:`SUITE2P_KEYS` are the default features; a file may hold more of the
``stat`` keys Suite2P computes (:data:`FEATURE_KEYS`), which Suite2P's
``Classifier`` and GUI use and its pipeline ignores.

Segmenting with such a file (``segment --classifier_path FILE.npy``) needs the
Suite2P settings of :func:`suite2p_classification_settings` and the file's
digest in the run's parameters (:func:`classifier_parameters`).
"""
import hashlib
import io
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np

from slapp.errors import SlappError

# The three stat keys Suite2P's pipeline classifies with, in its built-in file's order.
SUITE2P_KEYS = ("skew", "compact", "npix_norm")
# Every ROI feature stored in ``rois`` under Suite2P's stat name, usable by its Classifier.
FEATURE_KEYS = ("skew", "compact", "npix_norm", "std", "footprint", "npix_soma", "solidity",
                "radius", "aspect_ratio")
# Suite2P's Classifier bins each feature at 100 quantile nodes of its training data;
# with fewer ROIs some bins are empty and its fit fails.
MIN_TRAINING_ROIS = 100


class ClassifierFileException(SlappError):
    """A classifier file that cannot be written, read or used as Suite2P's."""


def classifier_bytes(stats: np.ndarray, iscell: np.ndarray, keys: Sequence[str]) -> bytes:
    """Suite2P's classifier file for labeled ROIs, as the bytes of its ``.npy``.

    Parameters
    ----------
    stats : numpy.ndarray
        (n_rois, n_keys) feature values, in ``keys`` order.
    iscell : numpy.ndarray
        (n_rois,) 1 for a cell, 0 for not a cell.
    keys : sequence of str
        Suite2P ``stat`` names of the columns.

    Returns
    -------
    bytes
        What ``np.save`` writes for ``{"stats", "iscell", "keys"}``, typed as
        Suite2P's built-in file (float64 stats, float32 iscell, list of keys).

    Raises
    ------
    ClassifierFileException
        When Suite2P could not fit a classifier on the data: fewer than
        :data:`MIN_TRAINING_ROIS` ROIs, one class only, a missing value, or
        shapes that disagree.
    """
    stats = np.asarray(stats, dtype=np.float64)
    iscell = np.asarray(iscell, dtype=np.float32)
    if stats.ndim != 2 or stats.shape != (len(iscell), len(keys)):
        raise ClassifierFileException(
            f"classifier data of shape {stats.shape} does not match {len(iscell)} labels and "
            f"{len(keys)} keys")
    if len(iscell) < MIN_TRAINING_ROIS:
        raise ClassifierFileException(
            f"{len(iscell)} labeled ROIs are too few: Suite2P's classifier needs at least "
            f"{MIN_TRAINING_ROIS}")
    if len(np.unique(iscell)) != 2:
        raise ClassifierFileException(
            "the labeled ROIs are all of one class: a classifier needs cells and not cells")
    if not np.isfinite(stats).all():
        raise ClassifierFileException("the classifier data has missing or infinite values")
    buffer = io.BytesIO()
    np.save(buffer, {"stats": stats, "iscell": iscell, "keys": list(keys)},
            allow_pickle=True)
    return buffer.getvalue()


def load_classifier(source: str | Path | bytes):
    """Load a classifier file with Suite2P's own ``Classifier``, which fits it.

    Parameters
    ----------
    source : str, Path or bytes
        The file, or its bytes.

    Returns
    -------
    suite2p.classification.Classifier
        Fitted on the file's data; ``keys`` holds its features.

    Raises
    ------
    ClassifierFileException
        When Suite2P cannot load it.
    """
    from suite2p.classification import Classifier

    what = "the classifier data" if isinstance(source, bytes) else str(source)
    try:  # Suite2P catches some errors of a bad file itself (and then says so), not all
        classifier = Classifier(io.BytesIO(source) if isinstance(source, bytes) else str(source))
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, AttributeError,
            TypeError) as error:
        raise ClassifierFileException(f"{what} is not a Suite2P classifier file: "
                                      f"{type(error).__name__}") from error
    if not classifier.loaded:
        raise ClassifierFileException(f"{what} is not a Suite2P classifier file")
    return classifier


def predict_probabilities(classifier, features: np.ndarray, keys: Sequence[str]) -> np.ndarray:
    """Each ROI's probability of being a cell under a Suite2P ``Classifier``.

    Parameters
    ----------
    classifier : suite2p.classification.Classifier
        From :func:`load_classifier`.
    features : numpy.ndarray
        (n_rois, len(keys)) feature values.
    keys : sequence of str
        Names of the columns; must include every key of the classifier.

    Returns
    -------
    numpy.ndarray
        float64 (n_rois,) probabilities, as Suite2P's ``predict_proba`` gives them.
    """
    missing = [key for key in classifier.keys if key not in keys]
    if missing:
        raise ClassifierFileException(f"the classifier needs features {missing} that were "
                                      "not given")
    if len(features) == 0:
        return np.zeros(0)
    stat = [dict(zip(keys, map(float, row))) for row in np.asarray(features, np.float64)]
    return np.asarray(classifier.predict_proba(stat), dtype=np.float64)


def content_digest(content: bytes) -> str:
    """SHA-256 (hex) of a classifier file's bytes: what ``classifier_models.file_digest`` holds."""
    return hashlib.sha256(content).hexdigest()


def file_digest(path: str | Path) -> str:
    """:func:`content_digest` of the file at ``path`` (classifier files are small)."""
    return content_digest(Path(path).read_bytes())


def suite2p_classification_settings(path: str | Path) -> dict:
    """The entries of Suite2P's ``settings["classification"]`` that classify with a file.

    Parameters
    ----------
    path : str or Path
        A Suite2P classifier file.

    Returns
    -------
    dict
        ``{"classifier_path": absolute path, "use_builtin_classifier": False}``:
        Suite2P's pipeline reads ``classifier_path`` first.

    Raises
    ------
    ClassifierFileException
        When the file is missing or Suite2P cannot load it (checked before
        minutes of segmentation are spent).
    """
    path = Path(path).absolute()
    if not path.is_file():
        raise ClassifierFileException(f"classifier file {path} does not exist")
    load_classifier(path)
    return {"classifier_path": str(path), "use_builtin_classifier": False}


def classifier_parameters(path: str | Path | None) -> dict:
    """What a run's parameters digest must cover of the classifier it used.

    Parameters
    ----------
    path : str, Path or None
        ``segment --classifier_path``; None for Suite2P's built-in classifier.

    Returns
    -------
    dict
        ``{}`` for the built-in classifier (so that the digest of runs without
        the option stays what it was), else ``{"classifier_sha256": digest}``:
        the file's content, not its path, names the classifier, so moving the
        file keeps the identity and editing it in place makes a new one.

    Raises
    ------
    ClassifierFileException
        When the file cannot be read.
    """
    if path is None:
        return {}
    try:
        return {"classifier_sha256": file_digest(path)}
    except OSError as error:
        raise ClassifierFileException(f"classifier file {path} cannot be read: "
                                      f"{error.strerror}") from error
