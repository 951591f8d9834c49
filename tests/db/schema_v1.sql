-- The labeling database. Column names are a contract: the labeling app reads them.
-- Every statement is idempotent, so `python -m slapp.db.init` can run any number of times.

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
    -- the slapp code version that produced the run
    ophys_segmentation_commit_hash text NOT NULL,
    source_video_path              text NOT NULL,
    -- [height, width] of the movie: the frame of every ROI's COO mask
    video_shape                    int[] NOT NULL CHECK (cardinality(video_shape) = 2),
    nframes                        int NOT NULL CHECK (nframes > 0),
    nbinned                        int NOT NULL CHECK (nbinned > 0),
    suite2p_version                text NOT NULL,
    -- every Suite2P setting used (db and settings dicts, as JSON)
    suite2p_settings               jsonb NOT NULL,
    suite2p_seconds                double precision NOT NULL,
    total_seconds                  double precision NOT NULL,
    hostname                       text NOT NULL,
    CONSTRAINT one_run_per_experiment_and_code_version
        UNIQUE (ophys_experiment_id, ophys_segmentation_commit_hash)
);

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
