"""Export stored segmentation runs as NWB 2.x files, with how they were made inside.

::

    python -m slapp.export.nwb --segmentation_run_id 3 --output_nwb run3.nwb
    python -m slapp.export.nwb --experiment_selection_id 1 --output_dir nwb/
    python -m slapp.export.nwb --segmentation_run_id 3 --output_nwb run3.nwb \
        --classifier_model_id 2

A file holds, in the processing module ``ophys``:

* ``ImageSegmentation`` / ``PlaneSegmentation`` ``suite2p_rois``: one row per ROI,
  the weighted pixel mask from its COO arrays (in the run's ``video_shape`` frame),
  and the columns ``suite2p_roi_index``, ``labeling_roi_id`` (``rois.id``),
  ``is_cell``, ``cell_probability`` and the shape statistics; with
  ``--classifier_model_id``, also ``model_cell_probability`` and
  ``model_is_cell``: that trained model's stored predictions
  (``roi_predictions``), NaN and False for a ROI it has no prediction for;
* ``Fluorescence`` with the ``RoiResponseSeries`` ``raw`` and ``neuropil``
  (frames x ROIs, at the frame rate Suite2P was given).

Provenance is in ``scratch/slapp_provenance``: JSON text with the whole
``segmentation_runs`` row (code version, Suite2P version and every setting,
source movie and its fingerprint, host, scheduler ids, timings, memory, the
manifest it was made from) and the experiment selection its manifest was
built from (decoded query strings, counts, seed): the run's own, recorded
when it was stored, never the newest selection that happens to hold the
experiment. With a model, ``"classifier_model"`` holds its
``classifier_models`` row (id, labeling jobs, file digest, code version) and
how many ROIs it predicted. A run stored before runs recorded their selection has
``"experiment_selection": null`` and is printed as "selection unknown". An
explicit ``--experiment_selection_id`` is recorded instead, and refused when
it does not hold the run's experiment. For a selection (``--output_dir``) the
run exported for each experiment is the one that counts
(:mod:`slapp.db.runs`): the current run of this code version and the Suite2P
options given (segment's defaults unless given). The NWB file's own
fields carry the headline: ``session_id`` is the experiment id,
``source_script`` the code version. The file is written beside its
destination under a temporary name and renamed into place, so a file at the
destination is always whole.

The run's mean image, max projection and correlation image, when the database has
them (``segmentation_images``), are the ``GrayscaleImage`` objects ``mean_image``,
``max_projection`` and ``correlation_image`` of the ``Images`` container
``suite2p_images`` in ``ophys``.
"""
import json
import logging
import os
import sys
import uuid
import warnings
from pathlib import Path

import marshmallow as mm
import numpy as np

from slapp.db.runs import RunParameters, RunParametersSchema, counted_runs_of_selection
from slapp.errors import SlappError
from slapp.db.predictions import load_classifier_model
from slapp.export.run_record import (SHAPE_COLUMNS, ModelPredictions, RunRois,
                                     load_predictions, load_rois, load_run, load_selection,
                                     provenance, recorded_rate)
from slapp.segmentation.images import RunImages, read_images
from slapp.utils.cli import run_main
from slapp.utils.code_version import code_version
from slapp.utils.files import stage_bytes, write_json_atomically
from slapp.utils.query_utils import DbConnection, labeling_connection
from slapp.utils.schema import ArgSchema, ArgSchemaParser, StrictInt

logger = logging.getLogger(__name__)

PROVENANCE_NAME = "slapp_provenance"
PLANE_SEGMENTATION_NAME = "suite2p_rois"
IMAGES_NAME = "suite2p_images"
_IMAGE_DESCRIPTIONS = {
    "mean_image": "mean of the movie's frames",
    "max_projection": "Suite2P's maximum projection of the binned, high-pass filtered movie",
    "correlation_image": "Suite2P's correlation map (Vcorr) that ROIs were detected on",
}
# The Allen Institute's two-photon experiments that LIMS holds are of mice.
DEFAULT_SPECIES = "Mus musculus"
# Namespace of the files' identifiers: one run identity, one identifier.
_IDENTIFIER_NAMESPACE = uuid.UUID("5b0b7a36-4c1e-4d5e-9a57-2f5f1e0b9c11")

_SHAPE_DESCRIPTIONS = {
    "npix": "pixels in the ROI's mask",
    "centroid_row": "row of the mask's centroid (pixels)",
    "centroid_col": "column of the mask's centroid (pixels)",
    "radius": "Suite2P's radius estimate (pixels)",
    "aspect_ratio": "Suite2P's aspect ratio of the mask",
    "compactness": "Suite2P's compactness of the mask (1 for a disk)",
    "skew": "skewness of the neuropil-corrected trace",
}



class NwbExportException(SlappError):
    """A run cannot be exported as asked."""


def _identifier(run: dict) -> str:
    identity = (f"{run['ophys_experiment_id']}/{run['ophys_segmentation_commit_hash']}/"
                f"{run['parameters_digest']}")
    return str(uuid.uuid5(_IDENTIFIER_NAMESPACE, identity))


def build_nwbfile(run: dict, rois: RunRois, record: dict, species: str = DEFAULT_SPECIES,
                  images: RunImages | None = None,
                  predictions: ModelPredictions | None = None):
    """Assemble the in-memory NWB file of one run.

    Parameters
    ----------
    run : dict
        From :func:`slapp.export.run_record.load_run`.
    rois : RunRois
        From :func:`slapp.export.run_record.load_rois`.
    record : dict
        From :func:`slapp.export.run_record.provenance`.
    species : str
        The subject's species (Latin binomial), which the labeling database does
        not record.
    images : RunImages, optional
        The run's images, added to ``ophys`` as :data:`IMAGES_NAME`.
    predictions : ModelPredictions, optional
        A classifier model's predictions, added as the ROI table's columns
        ``model_cell_probability`` and ``model_is_cell``.

    Returns
    -------
    pynwb.NWBFile
    """
    from pynwb import NWBFile

    experiment_id = run["ophys_experiment_id"]
    code = run["code_label"] or run["ophys_segmentation_commit_hash"]
    nwbfile = NWBFile(
        session_description=(f"Suite2P {run['suite2p_version']} segmentation of LIMS ophys "
                             f"experiment {experiment_id}, stored by slapp as segmentation "
                             f"run {run['id']}"),
        identifier=_identifier(run),
        subject=_subject(species),
        session_start_time=run["created_at"],
        session_id=str(experiment_id),
        experiment_description=("Cell ROIs found by Suite2P in a motion-corrected two-photon "
                                "movie, for labeling. The session start time is when the "
                                "segmentation run was stored: the export does not know when "
                                "the movie was acquired."),
        source_script=f"slapp {code} (code version {run['ophys_segmentation_commit_hash']})",
        source_script_file_name="slapp/segmentation/segment.py",
        keywords=["two-photon", "calcium imaging", "segmentation", "Suite2P"],
        notes=(f"How this file was made (selection, code and Suite2P versions, every "
               f"setting, source movie and fingerprint, host, timings) is JSON text in "
               f"scratch/{PROVENANCE_NAME}."))
    plane_segmentation = _image_segmentation(nwbfile, run, rois, predictions)
    if images is not None:
        _add_images(nwbfile, images)
    if plane_segmentation is not None:
        _fluorescence(nwbfile, run, rois, plane_segmentation)
    nwbfile.add_scratch(json.dumps(record, sort_keys=True, default=str), name=PROVENANCE_NAME,
                        description="slapp's record of the segmentation run and the "
                                    "experiment selection it came from (JSON)")
    return nwbfile


def _subject(species: str):
    from pynwb.file import Subject

    return Subject(subject_id="unknown", species=species, sex="U", age="P0D/",
                   description=("The labeling database does not record the subject: its id, "
                                "sex (U: unknown) and age (P0D/: any) are unknown here and "
                                "are in LIMS under the session's specimen."))


def _model_columns(plane_segmentation, predictions: ModelPredictions | None) -> dict:
    """Add the model's two columns; their values for each ROI position, by column."""
    if predictions is None:
        return {}
    model = predictions.model
    name = (f"slapp classifier model {model['id']} (classifier_models.id; trained on "
            f"labeling jobs {', '.join(map(str, model['labeling_job_ids']))})")
    plane_segmentation.add_column(
        "model_cell_probability",
        f"{name}: its stored probability that the ROI is a cell; NaN where the model has no "
        "stored prediction for the ROI")
    plane_segmentation.add_column(
        "model_is_cell",
        f"{name}: its stored prediction calls the ROI a cell (probability above the "
        "threshold it was predicted with); False also where the model has no stored "
        "prediction for the ROI (model_cell_probability NaN)")
    return {"model_cell_probability": predictions.probability.astype(float),
            "model_is_cell": predictions.is_cell}


def _image_segmentation(nwbfile, run: dict, rois: RunRois,
                        predictions: ModelPredictions | None = None):
    """The ROI table of the run, or None for a run without ROIs (NWB wants no empty table)."""
    from pynwb.ophys import ImageSegmentation, OpticalChannel

    height, width = run["video_shape"]
    device = nwbfile.create_device(name="microscope",
                                   description="the two-photon microscope of the experiment")
    channel = OpticalChannel(name="green", description="the recorded channel",
                             emission_lambda=np.nan)
    plane = nwbfile.create_imaging_plane(
        name="imaging_plane", optical_channel=channel, device=device,
        imaging_rate=recorded_rate(run), excitation_lambda=np.nan,
        indicator="unknown: the labeling database does not record it",
        location="root",
        description=(f"{height} x {width} px motion-corrected movie "
                     f"{run['source_video_path']}. Location 'root' is the Allen CCF's whole "
                     f"brain: the labeling database does not record the targeted structure"))
    ophys = nwbfile.create_processing_module(
        name="ophys", description="Suite2P ROIs and their fluorescence")
    if not len(rois.roi_ids):
        return None
    segmentation = ImageSegmentation(name="ImageSegmentation")
    ophys.add(segmentation)
    plane_segmentation = segmentation.create_plane_segmentation(
        name=PLANE_SEGMENTATION_NAME, imaging_plane=plane,
        description=(f"Suite2P {run['suite2p_version']} ROIs, weighted pixel masks in the "
                     f"{height} x {width} px frame of the movie"))
    plane_segmentation.add_column("suite2p_roi_index", "the ROI's index in Suite2P's stat.npy")
    plane_segmentation.add_column("labeling_roi_id", "rois.id in the labeling database")
    plane_segmentation.add_column("is_cell", "Suite2P's built-in classifier calls it a cell")
    plane_segmentation.add_column("cell_probability",
                                  "the classifier's probability that it is a cell")
    for name in SHAPE_COLUMNS:
        plane_segmentation.add_column(name, _SHAPE_DESCRIPTIONS[name])
    model_columns = _model_columns(plane_segmentation, predictions)
    for position, (rows, cols, weights) in enumerate(rois.masks):
        plane_segmentation.add_roi(
            pixel_mask=list(zip(cols.tolist(), rows.tolist(), weights.tolist())),
            suite2p_roi_index=int(rois.suite2p_roi_index[position]),
            labeling_roi_id=int(rois.roi_ids[position]),
            is_cell=bool(rois.is_cell[position]),
            cell_probability=float(rois.cell_probability[position]),
            **{name: float(rois.shape[name][position]) for name in SHAPE_COLUMNS},
            **{name: values[position].item() for name, values in model_columns.items()})
    return plane_segmentation


def _add_images(nwbfile, images: RunImages) -> None:
    from pynwb.base import Images
    from pynwb.image import GrayscaleImage

    container = Images(name=IMAGES_NAME, description=(
        f"the run's images in the movie's frame, as computed by the {images.computed_by} "
        f"step"))
    for name, description in _IMAGE_DESCRIPTIONS.items():
        container.add_image(GrayscaleImage(name=name, data=getattr(images, name),
                                           description=description))
    nwbfile.processing["ophys"].add(container)


def _fluorescence(nwbfile, run: dict, rois: RunRois, plane_segmentation) -> None:
    from hdmf.backends.hdf5.h5_utils import H5DataIO
    from pynwb.ophys import Fluorescence, RoiResponseSeries

    region = plane_segmentation.create_roi_table_region(
        region=list(range(len(rois.roi_ids))), description="every ROI of the run")
    rate = recorded_rate(run)
    fluorescence = Fluorescence(name="Fluorescence")
    nwbfile.processing["ophys"].add(fluorescence)
    for name, data, what in (("raw", rois.traces, "raw fluorescence of each ROI"),
                             ("neuropil", rois.neuropil_traces,
                              "neuropil fluorescence around each ROI")):
        fluorescence.add_roi_response_series(RoiResponseSeries(
            name=name, data=H5DataIO(data, compression="gzip"), rois=region,
            unit="a.u.", rate=rate, starting_time=0.0,
            description=f"{what}, as Suite2P extracted it (frames x ROIs)"))


def write_nwbfile(nwbfile, path: Path) -> None:
    """Write an NWB file so that ``path`` is either the whole new file or untouched.

    Parameters
    ----------
    nwbfile : pynwb.NWBFile
        The file to write.
    path : pathlib.Path
        The destination; its directory must exist.
    """
    from pynwb import NWBHDF5IO

    temporary = stage_bytes(path, b"")
    try:
        with warnings.catch_warnings():
            # the temporary name ends in .tmp; the file it becomes ends in .nwb
            warnings.filterwarnings("ignore", message=".*does not end in '.nwb'")
            with NWBHDF5IO(str(temporary), mode="w") as io:
                io.write(nwbfile)
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def export_run(label_dbconn: DbConnection, segmentation_run_id: int, output_nwb: Path,
               experiment_selection_id: int | None = None,
               species: str = DEFAULT_SPECIES, classifier_model: dict | None = None) -> dict:
    """Write one stored run as an NWB file.

    Parameters
    ----------
    label_dbconn : DbConnection
        The labeling database.
    segmentation_run_id : int
        ``segmentation_runs.id``.
    output_nwb : pathlib.Path
        The file to write (replaced whole if it exists).
    experiment_selection_id : int, optional
        The selection to record (it must hold the experiment); default: the
        run's own, None (unknown) for a run stored before runs recorded it.
    species : str
        The subject's species.
    classifier_model : dict, optional
        The ``classifier_models`` row
        (:func:`slapp.db.predictions.load_classifier_model`) whose stored
        predictions the file shows beside Suite2P's.

    Returns
    -------
    dict
        ``experiment_id``, ``segmentation_run_id``, ``n_rois``, ``nwb_path``,
        ``experiment_selection_id`` (None: unknown).

    Raises
    ------
    RunsException, RunRecordException
        If the run does not exist or cannot be exported, or the selection
        given does not hold its experiment.
    """
    run = load_run(label_dbconn, segmentation_run_id)
    selection = load_selection(label_dbconn, run, experiment_selection_id)
    rois = load_rois(label_dbconn, run)
    predictions = (load_predictions(label_dbconn, classifier_model, run, rois)
                   if classifier_model else None)
    record = provenance(run, selection, code_version(), predictions)
    write_nwbfile(build_nwbfile(run, rois, record, species,
                                read_images(label_dbconn, segmentation_run_id), predictions),
                  output_nwb)
    logger.info("wrote run %s (%d ROIs) to %s", segmentation_run_id, len(rois.roi_ids),
                output_nwb)
    return {"experiment_id": run["ophys_experiment_id"],
            "segmentation_run_id": segmentation_run_id, "n_rois": int(run["n_rois"]),
            "nwb_path": str(output_nwb),
            "experiment_selection_id": selection["experiment_selection_id"] if selection
            else None}


class NwbExportSchema(ArgSchema, RunParametersSchema):
    """One run, or the runs that count of a selection (segment's options say which)."""

    segmentation_run_id = StrictInt(
        validate=mm.validate.Range(min=1),
        metadata={"description": "segmentation_runs.id of the run to export (with "
                                 "--output_nwb)"})
    output_nwb = mm.fields.Str(
        metadata={"description": "the NWB file to write for --segmentation_run_id; its "
                                 "directory must exist. Ends in .nwb, as NWB readers and "
                                 "DANDI expect"})
    experiment_selection_id = StrictInt(
        validate=mm.validate.Range(min=1),
        metadata={"description": "with --output_dir: export the run that counts (this code "
                                 "version, these Suite2P options) of every experiment of "
                                 "this selection. With --segmentation_run_id: the selection "
                                 "recorded in the file, which must hold the run's "
                                 "experiment (default: the run's own, recorded when it was "
                                 "stored)"})
    output_dir = mm.fields.Str(
        metadata={"description": "directory for --experiment_selection_id, created if "
                                 "needed; one file <experiment_id>.nwb per experiment, "
                                 "the name of its outline plot"})
    classifier_model_id = StrictInt(
        validate=mm.validate.Range(min=1),
        metadata={"description": "classifier_models.id of a trained model whose stored "
                                 "predictions (predict's) become two more ROI columns beside "
                                 "Suite2P's; default: Suite2P's alone"})
    species = mm.fields.Str(
        dump_default=DEFAULT_SPECIES,
        metadata={"description": "the subject's species, which NWB readers and DANDI "
                                 "require and the labeling database does not record. The "
                                 "default is what the Allen Institute's LIMS two-photon "
                                 "experiments are: mice"})

    @mm.validates_schema
    def one_mode(self, data, **kwargs):
        by_run = "segmentation_run_id" in data or "output_nwb" in data
        by_selection = "output_dir" in data
        if by_run == by_selection:
            raise mm.ValidationError(
                "give --segmentation_run_id with --output_nwb, or --experiment_selection_id "
                "with --output_dir")
        if by_run and not ("segmentation_run_id" in data and "output_nwb" in data):
            raise mm.ValidationError("--segmentation_run_id and --output_nwb go together")
        if by_selection and "experiment_selection_id" not in data:
            raise mm.ValidationError("--output_dir needs --experiment_selection_id")
        if by_run and not data["output_nwb"].endswith(".nwb"):
            raise mm.ValidationError(f"--output_nwb {data['output_nwb']} must end in .nwb")


class ExportedFileSchema(mm.Schema):
    experiment_id = StrictInt(required=True)
    segmentation_run_id = StrictInt(required=True)
    n_rois = StrictInt(required=True)
    nwb_path = mm.fields.Str(required=True)
    experiment_selection_id = StrictInt(
        required=True, allow_none=True,
        metadata={"description": "the selection recorded in the file; null: unknown"})


class NwbExportOutputSchema(mm.Schema):
    files = mm.fields.Nested(ExportedFileSchema, many=True, required=True)
    experiments_without_run = mm.fields.List(StrictInt(), required=True)


class NwbExport(ArgSchemaParser):
    """Export one run, or the run that counts of every experiment of a selection."""

    default_schema = NwbExportSchema
    default_output_schema = NwbExportOutputSchema

    def run(self, label_dbconn: DbConnection) -> dict:
        """Write the NWB file(s), print each path, and write ``--output_json`` if asked.

        Parameters
        ----------
        label_dbconn : DbConnection
            The labeling database.

        Returns
        -------
        dict
            See :class:`NwbExportOutputSchema`.
        """
        model = (load_classifier_model(label_dbconn, self.args["classifier_model_id"])
                 if "classifier_model_id" in self.args else None)
        if "output_dir" in self.args:
            output = self._export_selection(label_dbconn, model)
        else:
            path = Path(self.args["output_nwb"]).absolute()
            if not path.parent.is_dir():
                raise NwbExportException(f"directory {path.parent} does not exist")
            output = {"files": [export_run(label_dbconn, self.args["segmentation_run_id"], path,
                                           self.args.get("experiment_selection_id"),
                                           self.args["species"], model)],
                      "experiments_without_run": []}
        for exported in output["files"]:
            selection = exported["experiment_selection_id"] or "unknown"
            print(f"experiment {exported['experiment_id']}: run "
                  f"{exported['segmentation_run_id']} ({exported['n_rois']} ROIs, selection "
                  f"{selection}) -> {exported['nwb_path']}")
        if output["experiments_without_run"]:
            print("no segmentation run of this code version and these parameters for "
                  "experiment "
                  + ", ".join(map(str, output["experiments_without_run"])))
        if self.args.get("output_json"):
            write_json_atomically(self.args["output_json"], self.get_output_json(output))
        return output

    def _export_selection(self, label_dbconn: DbConnection, model: dict | None) -> dict:
        selection_id = self.args["experiment_selection_id"]
        counted = counted_runs_of_selection(label_dbconn, selection_id,
                                            RunParameters.from_args(self.args))
        runs = {eid: run_id for eid, run_id in counted.items() if run_id is not None}
        missing = [eid for eid, run_id in counted.items() if run_id is None]
        if not runs:
            raise NwbExportException(
                f"no experiment of selection {selection_id} has a segmentation run")
        output_dir = Path(self.args["output_dir"]).absolute()
        output_dir.mkdir(parents=True, exist_ok=True)
        files = [export_run(label_dbconn, run_id, output_dir / f"{experiment_id}.nwb",
                            species=self.args["species"], classifier_model=model)
                 for experiment_id, run_id in runs.items()]
        return {"files": files, "experiments_without_run": missing}


def main() -> None:  # pragma: no cover - thin CLI
    """Run the command with the labeling database from the environment."""
    parser = NwbExport(logger_name="NwbExport")
    with labeling_connection(interactive=True) as label_dbconn:
        parser.run(label_dbconn)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "export-nwb"))
