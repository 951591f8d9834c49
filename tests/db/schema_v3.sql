-- The labeling database. Column names are a contract: the labeling app reads them.
-- Every statement is idempotent, so `python -m slapp.db.init` can run any number of times.
-- Schema version 3 as released (slapp/db/schema.sql before the labeling tables): the
-- fixture tests/db/test_db_init.py upgrades from.

-- Which schema versions this database has had: one row per version, written by
-- slapp.db.init when it creates or upgrades the tables. Version 1 had no such table.
CREATE TABLE IF NOT EXISTS slapp_schema_version (
    version    int PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now(),
    -- 'created', or 'upgraded from <version>'
    how        text NOT NULL
);

CREATE TABLE IF NOT EXISTS experiment_selection (
    id                   serial PRIMARY KEY,
    created_at           timestamptz NOT NULL DEFAULT now(),
    -- base64 (UTF-8) of each LIMS query string, in input order
    base64_query_strings text[] NOT NULL,
    -- the slapp code version that made the selection
    slapp_commit_hash    text NOT NULL,
    -- every id each query returned: one row per query, short rows padded with NULL
    ophys_experiment_ids bigint[] NOT NULL,
    -- how many ids were drawn from each query, in query order
    sub_selection_counts int[] NOT NULL,
    -- the ids sent on to segmentation, in query order
    sub_selected_ids     bigint[] NOT NULL,
    random_seed          int NOT NULL,
    comment_string       text NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS segmentation_runs (
    id                             serial PRIMARY KEY,
    created_at                     timestamptz NOT NULL DEFAULT now(),
    ophys_experiment_id            bigint NOT NULL,
    -- the slapp code version that produced the run: a digest of the package's sources
    ophys_segmentation_commit_hash text NOT NULL,
    -- the same code for people: package version and git describe where available
    code_label                     text NOT NULL DEFAULT '',
    -- digest of every Suite2P setting used, nbinned and the Suite2P version
    parameters_digest              text NOT NULL,
    source_video_path              text NOT NULL,
    -- size, mtime, shape, dtype and a hash of sampled frames of the movie read
    movie_fingerprint              jsonb NOT NULL,
    -- [height, width] of the movie: the frame of every ROI's COO mask
    video_shape                    int[] NOT NULL CHECK (cardinality(video_shape) = 2),
    nframes                        int NOT NULL CHECK (nframes > 0),
    nbinned                        int NOT NULL CHECK (nbinned > 0),
    suite2p_version                text NOT NULL,
    -- every Suite2P setting used (db and settings dicts, as JSON)
    suite2p_settings               jsonb NOT NULL,
    -- how Suite2P got the frames: streamed from the HDF5 file, or its binary copy
    frame_source                   text NOT NULL DEFAULT 'binary'
                                   CHECK (frame_source IN ('hdf5_stream', 'binary')),
    suite2p_seconds                double precision NOT NULL,
    total_seconds                  double precision NOT NULL,
    -- seconds per stage: read_and_bin, detection, extraction, classification, database_write
    stage_seconds                  jsonb NOT NULL DEFAULT '{}',
    -- the task's peak resident memory and the bytes Suite2P wrote to scratch
    peak_rss_bytes                 bigint,
    scratch_bytes                  bigint,
    hostname                       text NOT NULL,
    -- the scheduler's job and array task ids (PBS or SLURM), when run by one
    scheduler_job_id               text,
    scheduler_task_id              text,
    -- where the run came from: the selection its manifest was built from and the
    -- manifest's path (NULL for runs stored before schema version 3: unknown)
    experiment_selection_id        int REFERENCES experiment_selection (id),
    manifest_path                  text,
    -- the run that replaced this one (segment --overwrite); the old run and its ROIs stay
    superseded_by                  int REFERENCES segmentation_runs (id),
    superseded_at                  timestamptz,
    CHECK ((superseded_by IS NULL) = (superseded_at IS NULL)),
    CHECK (superseded_by <> id)
);

-- One current run per identity (experiment, code version, parameters digest); any
-- number of superseded ones beside it.
CREATE UNIQUE INDEX IF NOT EXISTS one_current_run_per_identity
    ON segmentation_runs (ophys_experiment_id, ophys_segmentation_commit_hash,
                          parameters_digest)
    WHERE superseded_by IS NULL;

CREATE TABLE IF NOT EXISTS rois (
    id                  serial PRIMARY KEY,
    segmentation_run_id int NOT NULL REFERENCES segmentation_runs (id) ON DELETE CASCADE,
    -- the ROI's index in Suite2P's stat.npy
    suite2p_roi_index   int NOT NULL,
    -- the weighted mask as a sparse COO matrix in the video_shape frame
    coo_row             int[] NOT NULL,
    coo_col             int[] NOT NULL,
    coo_data            real[] NOT NULL,
    -- raw fluorescence and neuropil traces, one value per frame
    trace               real[] NOT NULL,
    neuropil_trace      real[] NOT NULL,
    -- Suite2P's built-in cell classifier
    is_cell             boolean NOT NULL,
    cell_probability    real NOT NULL,
    -- shape statistics a labeler filters on
    npix                int NOT NULL,
    centroid_row        real NOT NULL,
    centroid_col        real NOT NULL,
    radius              real NOT NULL,
    aspect_ratio        real NOT NULL,
    compactness         real NOT NULL,
    skew                real NOT NULL,
    CONSTRAINT one_roi_per_suite2p_index UNIQUE (segmentation_run_id, suite2p_roi_index),
    CHECK (cardinality(coo_row) = cardinality(coo_col)
           AND cardinality(coo_row) = cardinality(coo_data))
);

CREATE TABLE IF NOT EXISTS segmentation_failures (
    id                             serial PRIMARY KEY,
    created_at                     timestamptz NOT NULL DEFAULT now(),
    -- NULL only when the manifest entry itself could not be read
    ophys_experiment_id            bigint,
    ophys_segmentation_commit_hash text NOT NULL,
    -- NULL when the task failed before its settings were known
    parameters_digest              text,
    manifest_path                  text NOT NULL,
    manifest_index                 int NOT NULL,
    hostname                       text NOT NULL,
    scheduler_job_id               text,
    scheduler_task_id              text,
    failure_class                  text NOT NULL CHECK (failure_class IN (
        'bad_input', 'out_of_memory', 'killed', 'suite2p_error',
        'database_unreachable', 'other')),
    -- the one-line message a user sees, and the full traceback when there is one
    message                        text NOT NULL,
    traceback                      text,
    -- exit status and signal, when recorded by a job script or run_local after the process ended
    exit_status                    int,
    signal_name                    text,
    duration_seconds               double precision
);

CREATE INDEX IF NOT EXISTS segmentation_failures_by_experiment
    ON segmentation_failures (ophys_experiment_id, created_at);
