"""The error tree: each expected error says whether resubmitting can help, and is classified so."""
import importlib
import pkgutil

import psycopg2
import pytest

import slapp
from slapp import errors
from slapp.errors import (BadInputError, OutOfMemoryError, SlappError, Suite2pError,
                          TransientError)
from slapp.segmentation import failures
from slapp.segmentation.rois import RoiException
from slapp.segmentation.store import DatabaseUnreachable, SegmentationStoreException
from slapp.segmentation.suite2p_runner import Suite2pRunException
from slapp.utils.query_utils import database_failure_class, is_transient_error


def every_slapp_error() -> set[type]:
    """Every SlappError subclass defined in slapp's modules (labeling's too, once there)."""
    for module in pkgutil.walk_packages(slapp.__path__, "slapp."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found, todo = set(), [SlappError]
    while todo:
        for subclass in todo.pop().__subclasses__():
            if subclass.__module__.startswith("slapp.") and subclass not in found:
                found.add(subclass)
                todo.append(subclass)
    return found


def test_every_expected_error_carries_a_failure_class_and_the_tree_is_drawn():
    classes = every_slapp_error()
    assert len(classes) > 20
    for error_class in classes:
        assert error_class.failure_class in errors.FAILURE_CLASSES, error_class
    for branch in (BadInputError, TransientError, Suite2pError, OutOfMemoryError):
        assert branch.__name__ in errors.__doc__


@pytest.mark.parametrize("error, expected, may_help", [
    (SegmentationStoreException("experiment 1 was stored and removed again by other tasks "
                                "meanwhile; rerun it"), errors.DATABASE_UNREACHABLE, True),
    (DatabaseUnreachable("database labeling unreachable for 600 s"),
     errors.DATABASE_UNREACHABLE, True),
    (RoiException("Suite2P ROI 3 has pixels outside the 64x64 movie"), errors.SUITE2P_ERROR,
     False),
    (Suite2pRunException("Suite2P failed on m.h5"), errors.SUITE2P_ERROR, False),
    (OutOfMemoryError("Suite2P ran out of memory on m.h5"), errors.OUT_OF_MEMORY, True),
    (BadInputError("movie m.h5 does not exist"), errors.BAD_INPUT, False),
    (SlappError("anything a user can fix"), errors.BAD_INPUT, False),
])
def test_an_error_is_classified_by_the_cause_it_carries(error, expected, may_help):
    assert failures.classify_exception(error) == expected
    assert error.resubmitting_may_help is may_help


def test_a_new_error_class_is_classified_by_its_failure_class_not_its_type():
    class StorageHiccup(SlappError):
        failure_class = errors.DATABASE_UNREACHABLE

    assert failures.classify_exception(StorageHiccup("the file server stalled")) == \
        errors.DATABASE_UNREACHABLE


def test_psycopg2_errors_are_read_in_one_place():
    refused = psycopg2.OperationalError("connection to server failed: Connection refused")
    wrong_password = psycopg2.OperationalError('password authentication failed for user "x"')
    assert (database_failure_class(refused), is_transient_error(refused)) == (
        errors.DATABASE_UNREACHABLE, True)
    assert (database_failure_class(wrong_password), is_transient_error(wrong_password)) == (
        errors.BAD_INPUT, False)
    assert database_failure_class(psycopg2.ProgrammingError("syntax error")) is None
    assert database_failure_class(ValueError("not a database error")) is None


def test_the_failure_classes_stay_importable_where_they_were():
    assert failures.TRANSIENT_CLASSES == errors.TRANSIENT_CLASSES
    assert failures.BAD_INPUT == "bad_input"


def test_suite2p_running_out_of_memory_is_out_of_memory_not_a_suite2p_error(tmp_path):
    from slapp.segmentation.suite2p_runner import _call_suite2p

    def runs_out_of_memory(movie_path, db, settings):
        raise MemoryError()

    with pytest.raises(OutOfMemoryError) as raised:
        _call_suite2p(runs_out_of_memory, tmp_path / "m.h5", {}, {})
    assert str(raised.value) == f"Suite2P ran out of memory on {tmp_path / 'm.h5'}"
    assert failures.classify_exception(raised.value) == errors.OUT_OF_MEMORY
