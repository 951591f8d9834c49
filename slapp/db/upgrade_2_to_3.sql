-- Schema version 2 -> 3: a run records where it came from, and --overwrite supersedes
-- instead of deleting. Every existing run is kept, current, with unknown provenance.
ALTER TABLE segmentation_runs
    ADD COLUMN experiment_selection_id int REFERENCES experiment_selection (id),
    ADD COLUMN manifest_path           text,
    ADD COLUMN superseded_by           int REFERENCES segmentation_runs (id),
    ADD COLUMN superseded_at           timestamptz,
    ADD CHECK ((superseded_by IS NULL) = (superseded_at IS NULL)),
    ADD CHECK (superseded_by <> id),
    DROP CONSTRAINT one_run_per_identity;

CREATE UNIQUE INDEX one_current_run_per_identity
    ON segmentation_runs (ophys_experiment_id, ophys_segmentation_commit_hash,
                          parameters_digest)
    WHERE superseded_by IS NULL;
