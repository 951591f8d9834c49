-- Schema version 3 -> 4: the Suite2P stat features a classifier reads, beside the
-- existing ROI columns (NULL for the ROIs already stored), and the log of a failed task
-- (NULL for the failures already stored). The labeling tables new in version 4 are
-- created by schema.sql.
-- (a version 1 database gets segmentation_failures, with log_path, from schema.sql)
ALTER TABLE IF EXISTS segmentation_failures ADD COLUMN log_path text;

ALTER TABLE rois
    ADD COLUMN compact   real GENERATED ALWAYS AS (compactness) STORED,
    ADD COLUMN npix_norm real,
    ADD COLUMN npix_soma int,
    ADD COLUMN std       real,
    ADD COLUMN footprint real,
    ADD COLUMN solidity  real;
