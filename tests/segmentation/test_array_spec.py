"""Job-array specifications, as a user types them after ``qsub -t`` / ``sbatch --array=``."""
import pytest

from slapp.segmentation.array_spec import ArraySpecException, array_spec


@pytest.mark.parametrize("indices, max_concurrent, expected", [
    (range(100), None, "0-99"),
    (range(100), 10, "0-99%10"),
    ([12, 34, 84], None, "12,34,84"),
    ([84, 12, 34], None, "12,34,84"),          # schedulers want ascending order
    ([3, 5, 6, 7, 9, 10], None, "3,5-7,9-10"),
    ([7, 7, 3, 3], None, "3,7"),               # a repeated index is one task
    ([0], None, "0"),
    ([12, 34, 84], 10, "12,34,84"),            # 3 tasks never reach a limit of 10
    ([1, 2, 3, 4], 4, "1-4"),
    ([1, 2, 3, 4], 3, "1-4%3"),
    ([1, 2, 3, 4], 0, "1-4"),                  # 0: no limit
])
def test_array_spec_is_compact_and_ordered(indices, max_concurrent, expected):
    assert array_spec(indices, max_concurrent) == expected


def test_array_spec_round_trips_through_the_scheduler_syntax():
    indices = [0, 1, 2, 5, 17, 18, 40, 41, 42, 43, 99]
    selected = []
    for part in array_spec(indices).split(","):
        first, _, last = part.partition("-")
        selected.extend(range(int(first), int(last or first) + 1))
    assert selected == indices


@pytest.mark.parametrize("indices, max_concurrent, message", [
    ([], None, "no index given"),
    ([1, -2], None, "not -2"),
    ([1, 2.5], None, "not 2.5"),
    ([True], None, "not True"),
    ([1, 2], -1, "max_concurrent must be a non-negative integer, not -1"),
])
def test_bad_indices_are_refused_with_the_reason(indices, max_concurrent, message):
    with pytest.raises(ArraySpecException, match=message):
        array_spec(indices, max_concurrent)
