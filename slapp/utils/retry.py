"""One way to retry: call again after a transient failure, waiting longer each time.

Every backoff of slapp goes through :func:`retry`: connecting to a database
(:class:`slapp.utils.query_utils.DbConnection`), storing a run
(:func:`slapp.segmentation.store.write_run`) and recording a failed task
(:func:`slapp.segmentation.store.record_failure`). They differ only in what
they call transient, how long they keep trying and what they log.
"""
import itertools
import math
import random
import time
from typing import Callable, TypeVar

Result = TypeVar("Result")


def retry(work: Callable[[], Result], *, transient: Callable[[Exception], bool],
          first_wait: float, longest_wait: float = math.inf, attempts: int | None = None,
          seconds: float | None = None, jitter: bool = True,
          before_wait: Callable[[Exception, int, float, float], None] | None = None
          ) -> Result:
    """Call ``work`` until it returns, waiting after each transient failure.

    The waits start at ``first_wait`` and double, up to ``longest_wait``; with
    ``jitter`` each is drawn between half and one and a half times that, so
    that the tasks of a job array that failed together do not come back
    together. The last wait is cut to end at the deadline, so the last try
    happens when the time is up.

    Parameters
    ----------
    work : callable
        Does the whole thing once; its result is returned.
    transient : callable
        Whether an exception ``work`` raised is worth another try; any other
        exception is raised at once.
    first_wait, longest_wait : float
        Seconds of the first and of the longest wait.
    attempts : int, optional
        Tries in all before the last transient exception is raised.
    seconds : float, optional
        How long to keep trying, counted from the first failure (a failing
        call may itself have taken long).
    jitter : bool
        Vary each wait at random (see above).
    before_wait : callable, optional
        Called as ``before_wait(error, attempt, wait, seconds_left)`` before each
        wait: to log it, or to drop a broken connection.

    Returns
    -------
    The result of the first call of ``work`` that returns.

    Raises
    ------
    Exception
        The exception of the last try, when it was not transient or when the
        tries or the time ran out.
    """
    deadline, wait = None, min(first_wait, longest_wait)
    for attempt in itertools.count(1):
        try:
            return work()
        except Exception as error:  # noqa: BLE001 - transient() decides
            if not transient(error) or (attempts is not None and attempt >= attempts):
                raise
            now = time.monotonic()
            if seconds is not None:
                deadline = now + seconds if deadline is None else deadline
            left = math.inf if deadline is None else deadline - now
            if left <= 0:
                raise
            delay = min(left, wait * (random.uniform(0.5, 1.5) if jitter else 1.0))
            if before_wait is not None:
                before_wait(error, attempt, delay, left)
            time.sleep(delay)
            wait = min(longest_wait, wait * 2)
