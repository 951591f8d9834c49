"""The errors a user can cause or fix, and whether resubmitting a task can help.

Every slapp command turns a :class:`SlappError` (and the input errors of the
libraries it uses: marshmallow validation, JSON syntax) into one line on stderr
and exit status 1. Any other exception is a bug in slapp and is reported as one.

Each expected error carries its *failure class*, the value a failed segment
task records in ``segmentation_failures.failure_class`` and that ``status``
reads to say which tasks to resubmit::

    SlappError              bad_input, unless a subclass says otherwise
    +-- BadInputError       bad_input             fix the input; resubmitting alone
    |   |                                         changes nothing (also SlappError's
    |   |                                         other subclasses: the commands' own)
    |   +-- UsageError (slapp.utils.cli): an unknown option, a badly typed value
    +-- TransientError      database_unreachable  resubmit: the database was
    |   |                                         unreachable, or tasks raced
    |   +-- DatabaseUnreachable, SegmentationStoreException (slapp.segmentation.store)
    +-- Suite2pError        suite2p_error         Suite2P failed on this movie, or
    |   |                                         returned ROIs slapp cannot store
    |   +-- Suite2pRunException (slapp.segmentation.suite2p_runner)
    |   +-- RoiException (slapp.segmentation.rois)
    +-- OutOfMemoryError    out_of_memory         resubmit with more memory
        (raised by slapp.segmentation.suite2p_runner)

Outside the tree, :func:`slapp.segmentation.failures.classify_exception` reads
a ``MemoryError`` anywhere in the chain as ``out_of_memory``, Ctrl-C or a
scheduler's signal as ``killed``, and a database error by what
:func:`slapp.utils.query_utils.database_failure_class` (the one reading of
psycopg2's errors) says; anything else is ``other``: a bug.
"""

BAD_INPUT = "bad_input"
OUT_OF_MEMORY = "out_of_memory"
KILLED = "killed"
SUITE2P_ERROR = "suite2p_error"
DATABASE_UNREACHABLE = "database_unreachable"
OTHER = "other"
# The values segmentation_failures.failure_class may hold (its CHECK constraint).
FAILURE_CLASSES = (BAD_INPUT, OUT_OF_MEMORY, KILLED, SUITE2P_ERROR, DATABASE_UNREACHABLE, OTHER)
# Those of a task that may well succeed when resubmitted unchanged.
TRANSIENT_CLASSES = (KILLED, OUT_OF_MEMORY, DATABASE_UNREACHABLE)


class SlappError(Exception):
    """An expected failure whose message tells the user what to change.

    Attributes
    ----------
    failure_class : str
        One of :data:`FAILURE_CLASSES`: ``bad_input`` unless a subclass says
        otherwise (see the tree in the module docstring).
    """

    failure_class = BAD_INPUT

    @property
    def resubmitting_may_help(self) -> bool:
        """Whether the same task, resubmitted unchanged, may succeed."""
        return self.failure_class in TRANSIENT_CLASSES


class BadInputError(SlappError):
    """The input (options, files, database contents) is wrong; fix it, then rerun."""

    failure_class = BAD_INPUT


class TransientError(SlappError):
    """A failure of the moment (the database unreachable, tasks racing); rerunning may help.

    The failure classes have no general "transient" value: the schema's
    ``database_unreachable`` is the transient class of every such failure.
    """

    failure_class = DATABASE_UNREACHABLE


class Suite2pError(SlappError):
    """Suite2P failed on a movie, or gave outputs slapp cannot use."""

    failure_class = SUITE2P_ERROR


class OutOfMemoryError(SlappError):
    """The task ran out of memory; it may succeed on a node with more."""

    failure_class = OUT_OF_MEMORY
