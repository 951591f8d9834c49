-- The labeling database. Column names are a contract: the labeling app reads them.
-- Every statement is idempotent, so `python -m slapp.db.init` can run any number of times.
-- This is schema version 4 (slapp.db.init.SCHEMA_VERSION). A database made by an
-- earlier version is first brought here by slapp.db.init: version 1 (runs keyed by
-- experiment and code version only) in Python, then upgrade_2_to_3.sql (provenance,
-- superseded runs) and upgrade_3_to_4.sql (ROI features for labeling); the tables
-- new in a version are created by this file, which runs last.

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
    -- the rest of Suite2P's stat features that its classifier and a trained one read
    -- (NULL for runs stored before schema version 4); compact is compactness under
    -- Suite2P's own name
    compact             real GENERATED ALWAYS AS (compactness) STORED,
    npix_norm           real,
    npix_soma           int,
    std                 real,
    footprint           real,
    solidity            real,
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
    duration_seconds               double precision,
    -- the task's log (run_local's per-attempt log, the SLURM task's output file);
    -- NULL where whatever started the task did not say (SLAPP_TASK_LOG)
    log_path                       text
);

CREATE INDEX IF NOT EXISTS segmentation_failures_by_experiment
    ON segmentation_failures (ophys_experiment_id, created_at);

-- ---------------------------------------------------------------------------------------
-- Step 4: what a labeler looks at (schema version 4)

-- The images Suite2P computes for a run, each [height, width] in the video_shape frame:
-- stored by segment, or computed from the movie by the artifacts step for older runs.
CREATE TABLE IF NOT EXISTS segmentation_images (
    segmentation_run_id int PRIMARY KEY REFERENCES segmentation_runs (id),
    created_at          timestamptz NOT NULL DEFAULT now(),
    mean_image          real[] NOT NULL,
    max_projection      real[] NOT NULL,
    correlation_image   real[] NOT NULL,
    -- 'segment' (Suite2P's own images) or 'artifacts' (computed later from the movie)
    computed_by         text NOT NULL CHECK (computed_by IN ('segment', 'artifacts'))
);

-- A set of ROIs to be judged by people, drawn once from runs by a sampling.
CREATE TABLE IF NOT EXISTS labeling_jobs (
    id              serial PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now(),
    name            text NOT NULL UNIQUE,
    -- how many labelers judge each ROI
    labels_per_roi  int NOT NULL CHECK (labels_per_roi > 0),
    sampling        text NOT NULL CHECK (sampling IN (
        'all', 'random', 'stratified', 'uncertain', 'ground_truth')),
    random_seed     int,
    n_rois          int CHECK (n_rois > 0),
    -- the runs the ROIs were drawn from, and the model 'uncertain' read
    segmentation_run_ids int[] NOT NULL,
    classifier_model_id  int,
    -- what the job was asked for (runs or manifest or selection, options), and its
    -- digest: the same name with the same inputs is the same job
    inputs          jsonb NOT NULL,
    inputs_digest   text NOT NULL
);

CREATE TABLE IF NOT EXISTS labeling_tasks (
    id              serial PRIMARY KEY,
    labeling_job_id int NOT NULL REFERENCES labeling_jobs (id),
    roi_id          int NOT NULL REFERENCES rois (id),
    -- the stratum (bin of the classifier's probability) and probability it was drawn with
    stratum         int,
    probability     real,
    -- labels wanted beyond the job's labels_per_roi: a tie or too few labels re-queues
    extra_labels    int NOT NULL DEFAULT 0 CHECK (extra_labels >= 0),
    CONSTRAINT one_task_per_job_and_roi UNIQUE (labeling_job_id, roi_id)
);

-- The files written for one ROI, as the original toolkit's JSON-lines manifest line
-- (keys experiment-id, roi-id, source-ref, ...), one row per ROI and artifact settings.
CREATE TABLE IF NOT EXISTS roi_manifests (
    id              serial PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now(),
    roi_id          int NOT NULL REFERENCES rois (id),
    manifest        jsonb NOT NULL,
    -- the directory the files were written to
    artifact_dir    text NOT NULL,
    -- digest of the artifact settings (crop size, clip length, quantiles, ...), which are
    -- kept in parameters with the quantiles each image was normalised by
    artifact_digest text NOT NULL,
    parameters      jsonb NOT NULL DEFAULT '{}',
    code_version    text NOT NULL,
    CONSTRAINT one_manifest_per_roi_and_artifacts
        UNIQUE (roi_id, artifact_digest, code_version)
);

-- ---------------------------------------------------------------------------------------
-- Steps 5-6: labelers and their labels (schema version 4)

CREATE TABLE IF NOT EXISTS labelers (
    id          serial PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    name        text NOT NULL UNIQUE,
    -- SHA-256 of the sign-in token (the token itself is shown once and never stored);
    -- NULL for a worker imported from a Ground Truth output manifest, who cannot sign in
    token_hash  text UNIQUE,
    revoked_at  timestamptz
);

-- A signed-in browser: the cookie holds a random session id, this table its hash.
CREATE TABLE IF NOT EXISTS labeler_sessions (
    id           serial PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    labeler_id   int NOT NULL REFERENCES labelers (id),
    session_hash text NOT NULL UNIQUE,
    expires_at   timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS roi_labels (
    id               serial PRIMARY KEY,
    created_at       timestamptz NOT NULL DEFAULT now(),
    labeling_task_id int NOT NULL REFERENCES labeling_tasks (id),
    labeler_id       int NOT NULL REFERENCES labelers (id),
    -- as the original's page answered; NULL only for a Ground Truth worker who timed out
    label            text CHECK (label IN ('cell', 'not cell')),
    note             text,
    -- how long the ROI was on the labeler's screen, and how it was shown
    -- (brightness, contrast, which views)
    seconds_shown    real CHECK (seconds_shown >= 0),
    view_settings    jsonb NOT NULL DEFAULT '{}',
    -- 'page', 'ground_truth' (imported) or 'simulated' (benchmarks)
    source           text NOT NULL DEFAULT 'page'
                     CHECK (source IN ('page', 'ground_truth', 'simulated')),
    -- the client's id for this submission: a retried request is stored once
    request_id       text UNIQUE,
    -- a labeler's changed label keeps the earlier one as history
    superseded_by    int REFERENCES roi_labels (id),
    CHECK (superseded_by <> id)
);

-- One current label per task and labeler: one labeler never labels a ROI twice.
CREATE UNIQUE INDEX IF NOT EXISTS one_current_label_per_task_and_labeler
    ON roi_labels (labeling_task_id, labeler_id) WHERE superseded_by IS NULL;

CREATE TABLE IF NOT EXISTS label_consensus (
    id               serial PRIMARY KEY,
    created_at       timestamptz NOT NULL DEFAULT now(),
    labeling_task_id int NOT NULL REFERENCES labeling_tasks (id),
    roi_id           int NOT NULL REFERENCES rois (id),
    -- NULL for a tie or fewer labels than min_labels
    label            text CHECK (label IN ('cell', 'not cell')),
    n_labels         int NOT NULL CHECK (n_labels >= 0),
    n_cell           int NOT NULL CHECK (n_cell >= 0 AND n_cell <= n_labels),
    strategy         text NOT NULL CHECK (strategy IN ('majority', 'consensus', 'any')),
    min_labels       int NOT NULL CHECK (min_labels > 0),
    CONSTRAINT one_consensus_per_task_and_rule UNIQUE (labeling_task_id, strategy, min_labels)
);

CREATE TABLE IF NOT EXISTS classifier_models (
    id                 serial PRIMARY KEY,
    created_at         timestamptz NOT NULL DEFAULT now(),
    labeling_job_ids   int[] NOT NULL,
    -- how the consensus was taken, and how many labels and ROIs the model learned from
    strategy           text NOT NULL,
    n_labels           int NOT NULL,
    n_rois             int NOT NULL,
    feature_keys       text[] NOT NULL,
    cv_accuracy        real,
    cv_f1              real,
    -- the Suite2P-format classifier file and the SHA-256 of its bytes
    file_path          text NOT NULL,
    file_digest        text NOT NULL,
    code_version       text NOT NULL,
    code_label         text NOT NULL DEFAULT '',
    -- everything else about the training (folds, class counts, model settings)
    details            jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE IF NOT EXISTS roi_predictions (
    id                  serial PRIMARY KEY,
    created_at          timestamptz NOT NULL DEFAULT now(),
    roi_id              int NOT NULL REFERENCES rois (id),
    classifier_model_id int NOT NULL REFERENCES classifier_models (id),
    probability         real NOT NULL CHECK (probability >= 0 AND probability <= 1),
    is_cell             boolean NOT NULL,
    threshold           real NOT NULL DEFAULT 0.5,
    CONSTRAINT one_prediction_per_roi_and_model UNIQUE (roi_id, classifier_model_id)
);

CREATE INDEX IF NOT EXISTS labeling_tasks_by_roi ON labeling_tasks (roi_id);
CREATE INDEX IF NOT EXISTS roi_labels_by_labeler ON roi_labels (labeler_id);
CREATE INDEX IF NOT EXISTS roi_predictions_by_model ON roi_predictions (classifier_model_id);
