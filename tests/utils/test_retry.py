"""The one retry helper: what it retries, how long it waits, when it gives up."""
import time

import pytest

from slapp.utils.retry import retry


class Flaky:
    """Fails with ``error`` the first ``failures`` calls, then returns the call count."""

    def __init__(self, failures: int, error: Exception = ConnectionError("down")):
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.calls


def transient(error: Exception) -> bool:
    return isinstance(error, ConnectionError)


def test_transient_failures_are_retried_with_doubling_waits():
    waits = []
    work = Flaky(3)
    assert retry(work, transient=transient, first_wait=0.01, jitter=False,
                 before_wait=lambda error, attempt, wait, left: waits.append(
                     (attempt, round(wait, 3)))) == 4
    assert waits == [(1, 0.01), (2, 0.02), (3, 0.04)]


def test_waits_stop_growing_at_the_longest_wait_and_vary_with_jitter():
    waits = []
    retry(Flaky(4), transient=transient, first_wait=0.01, longest_wait=0.02,
          before_wait=lambda error, attempt, wait, left: waits.append(wait))
    assert 0.005 <= waits[0] <= 0.015
    assert all(0.01 <= wait <= 0.03 for wait in waits[1:])


def test_any_other_error_is_raised_at_once():
    work = Flaky(1, ValueError("bad input"))
    with pytest.raises(ValueError, match="bad input"):
        retry(work, transient=transient, first_wait=0.01)
    assert work.calls == 1


def test_it_gives_up_after_the_attempts_with_the_last_error():
    work = Flaky(10)
    with pytest.raises(ConnectionError):
        retry(work, transient=transient, first_wait=0.001, attempts=3)
    assert work.calls == 3


def test_it_gives_up_when_the_time_is_up_counted_from_the_first_failure():
    work = Flaky(1000)
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        retry(work, transient=transient, first_wait=0.01, seconds=0.2)
    assert 0.2 <= time.monotonic() - started < 2
    assert work.calls >= 3


def test_no_time_means_one_try():
    work = Flaky(5)
    with pytest.raises(ConnectionError):
        retry(work, transient=transient, first_wait=0.01, seconds=0)
    assert work.calls == 1
