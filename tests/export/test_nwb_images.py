"""slapp.export.nwb: a run's stored images are in its NWB file, as grayscale images."""
import numpy as np
import pytest
from stored_runs import insert_run, random_masks

pynwb = pytest.importorskip("pynwb")

from slapp.export.nwb import IMAGES_NAME, export_run  # noqa: E402
from slapp.segmentation.images import ARTIFACTS, RunImages, insert_images  # noqa: E402

SHAPE = (32, 48)


def test_the_runs_images_are_exported(labeling_db, tmp_path):
    run_id = insert_run(labeling_db, 850517344, random_masks(np.random.default_rng(1), SHAPE, 3),
                        video_shape=SHAPE)
    rng = np.random.default_rng(2)
    images = RunImages(*(rng.random(SHAPE, dtype=np.float32) for _ in range(3)),
                       computed_by=ARTIFACTS)
    with labeling_db.transaction() as cursor:
        insert_images(cursor, run_id, images)
    export_run(labeling_db, run_id, tmp_path / "run.nwb")
    with pynwb.NWBHDF5IO(str(tmp_path / "run.nwb"), mode="r") as io:
        container = io.read().processing["ophys"][IMAGES_NAME]
        for name in ("mean_image", "max_projection", "correlation_image"):
            np.testing.assert_array_equal(container[name].data[:], getattr(images, name))
        assert "artifacts" in container.description


def test_a_run_without_images_exports_none(labeling_db, tmp_path):
    run_id = insert_run(labeling_db, 850517344, random_masks(np.random.default_rng(1), SHAPE, 2),
                        video_shape=SHAPE)
    export_run(labeling_db, run_id, tmp_path / "run.nwb")
    with pynwb.NWBHDF5IO(str(tmp_path / "run.nwb"), mode="r") as io:
        assert IMAGES_NAME not in io.read().processing["ophys"].data_interfaces
