-- Schema version 3 -> 4: the Suite2P stat features a classifier reads, beside the
-- existing ROI columns (NULL for the ROIs already stored). The labeling tables new in
-- version 4 are created by schema.sql.
ALTER TABLE rois
    ADD COLUMN compact   real GENERATED ALWAYS AS (compactness) STORED,
    ADD COLUMN npix_norm real,
    ADD COLUMN npix_soma int,
    ADD COLUMN std       real,
    ADD COLUMN footprint real,
    ADD COLUMN solidity  real;
