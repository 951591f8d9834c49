"""Per-run figures of a batch, their distributions, and the runs that stand out.

Outliers are judged by the robust z-score of Iglewicz and Hoaglin,
``0.6745 (x - median) / MAD``: the median and the median absolute deviation
are not dragged by the outliers themselves, as a mean and standard deviation
are, so one failed movie cannot hide another.
"""
import numpy as np

# |robust z| above this is an outlier: Iglewicz and Hoaglin's recommended cut-off.
OUTLIER_Z = 3.5
# A flagged figure must also differ from the batch median by more than this
# fraction of it. The robust z-score alone calls 29 ROIs an outlier among runs of
# 30: identical values leave no spread to measure a difference against.
MIN_RELATIVE_DEVIATION = 0.25
# Fewer runs than this and no figure is called an outlier: the median and MAD of
# four values are too coarse (two equal values make the MAD tiny, and a task that
# merely started beside another looks extreme).
MIN_RUNS_FOR_OUTLIERS = 5
# 0.6745 is the 75th percentile of the standard normal, so that for normal data
# the robust z-score has the scale of the ordinary one.
_MAD_SCALE = 0.6745
# When more than half the values are equal the MAD is 0; the mean absolute
# deviation, scaled by sqrt(pi/2) to a standard deviation, stands in for it.
_MEAN_AD_SCALE = 1.253314

# The figures whose distributions the report shows: key, label, unit.
METRICS = (
    ("n_rois", "ROI count", "ROIs"),
    ("median_npix", "median ROI size", "px"),
    ("cell_fraction", "cell fraction", ""),
    ("ms_per_frame", "runtime per frame", "ms"),
)


def add_derived_figures(entries: list[dict]) -> None:
    """Add ``cell_fraction`` and ``ms_per_frame`` to each done entry (None otherwise).

    Parameters
    ----------
    entries : list of dict
        From :func:`slapp.report.entries.report_entries`; changed in place.
    """
    for entry in entries:
        done = entry["segmentation_run_id"] is not None
        entry["cell_fraction"] = (entry["n_cells"] / entry["n_rois"]
                                  if done and entry["n_rois"] else None)
        entry["ms_per_frame"] = (1000.0 * entry["total_seconds"] / entry["nframes"]
                                 if done else None)


def robust_z(values: np.ndarray) -> np.ndarray:
    """The robust z-score of each value.

    Parameters
    ----------
    values : numpy.ndarray
        float (n,), no NaN.

    Returns
    -------
    numpy.ndarray
        float (n,); all 0 when every value is the same.
    """
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return values
    median = np.median(values)
    deviation = np.abs(values - median)
    mad = np.median(deviation)
    if mad > 0:
        return _MAD_SCALE * (values - median) / mad
    mean_deviation = deviation.mean()
    if mean_deviation > 0:
        return (values - median) / (_MEAN_AD_SCALE * mean_deviation)
    return np.zeros_like(values)


def flag_outliers(entries: list[dict]) -> dict[str, int]:
    """Mark each entry's outlying figures and zero-ROI runs.

    A figure is an outlier when its robust z-score exceeds :data:`OUTLIER_Z` and
    it differs from the median by more than :data:`MIN_RELATIVE_DEVIATION` of it;
    it is judged only when at least :data:`MIN_RUNS_FOR_OUTLIERS` runs have it.

    Each entry gets ``flags``: a list of short texts such as ``"no ROIs"`` or
    ``"ROI count high (z 5.2)"``.

    Parameters
    ----------
    entries : list of dict
        With the figures of :data:`METRICS`; changed in place.

    Returns
    -------
    dict
        Metric key -> number of outliers, plus ``zero_roi_runs``.
    """
    counts = {key: 0 for key, _, _ in METRICS}
    for entry in entries:
        entry["flags"] = []
    counts["zero_roi_runs"] = 0
    for entry in entries:
        if entry["segmentation_run_id"] is not None and entry["n_rois"] == 0:
            entry["flags"].append("no ROIs")
            counts["zero_roi_runs"] += 1
    for key, label, _ in METRICS:
        having = [entry for entry in entries if entry.get(key) is not None]
        if len(having) < MIN_RUNS_FOR_OUTLIERS:
            continue
        values = np.array([entry[key] for entry in having], np.float64)
        median = float(np.median(values))
        for entry, value, score in zip(having, values, robust_z(values)):
            far = abs(value - median) > MIN_RELATIVE_DEVIATION * abs(median)
            if far and abs(score) > OUTLIER_Z:
                entry["flags"].append(f"{label} {'high' if score > 0 else 'low'} "
                                      f"(z {score:.1f})")
                counts[key] += 1
    return counts


def histogram(values: list[float], bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Counts of ``values`` in equal bins between their minimum and maximum.

    Parameters
    ----------
    values : list of float
        The figures (no None).
    bins : int
        Number of bins.

    Returns
    -------
    counts : numpy.ndarray
        int (bins,).
    edges : numpy.ndarray
        float (bins + 1,).
    """
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return np.zeros(0, int), np.zeros(1)
    low, high = float(values.min()), float(values.max())
    if high == low:
        low, high = low - 0.5, high + 0.5
    return np.histogram(values, bins=bins, range=(low, high))
