"""Job-array index specifications for PBS (``qsub -t``) and SLURM (``sbatch --array``).

Both schedulers accept the same compact syntax: comma-separated indices and
``first-last`` ranges, optionally followed by ``%K`` to run at most K tasks
at once, e.g. ``0-99%10`` or ``12,34,84``. Indices must be ascending (the seed
noted that PBS needs them in order), so they are sorted and de-duplicated.
"""
from typing import Iterable

from slapp.errors import SlappError


class ArraySpecException(SlappError):
    """The indices cannot form a job-array specification."""


def index_ranges(indices: list[int]) -> list[tuple[int, int]]:
    """Group sorted, distinct indices into runs of consecutive values, as (first, last)."""
    runs = []
    for index in indices:
        if runs and index == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs


def array_spec(indices: Iterable[int], max_concurrent: int | None = None) -> str:
    """Write the shortest job-array specification that selects exactly ``indices``.

    Parameters
    ----------
    indices : iterable of int
        Manifest indices (array task ids), in any order, repeats allowed.
    max_concurrent : int, optional
        Run at most this many tasks at a time (the ``%K`` suffix). None or 0
        means no limit. A limit at or above the number of tasks changes
        nothing, so it is left out.

    Returns
    -------
    str
        E.g. ``"0-99%10"`` for ``range(100)`` with a limit of 10,
        ``"12,34,84"`` for ``[84, 12, 34]``, ``"3,5-7"`` for ``[3, 5, 6, 7]``.

    Raises
    ------
    ArraySpecException
        If there is no index, an index is negative or not an integer, or
        ``max_concurrent`` is negative.
    """
    values = list(indices)
    if not values:
        raise ArraySpecException("no index given: a job array needs at least one task")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ArraySpecException(
                f"array indices are non-negative integers, not {value!r}")
    if max_concurrent is not None and (isinstance(max_concurrent, bool)
                                       or not isinstance(max_concurrent, int)
                                       or max_concurrent < 0):
        raise ArraySpecException(
            f"max_concurrent must be a non-negative integer, not {max_concurrent!r}")
    distinct = sorted(set(values))
    spec = ",".join(str(first) if first == last else f"{first}-{last}"
                    for first, last in index_ranges(distinct))
    if max_concurrent and max_concurrent < len(distinct):
        spec += f"%{max_concurrent}"
    return spec
