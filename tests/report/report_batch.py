"""The batch the report tests use: every kind of manifest entry."""

SHAPE = (32, 32)
# experiment id -> ROI count of its run ("failed"/"missing": no run). 60 ROIs is a
# high outlier and 0 ROIs a zero-ROI run among runs of 10 to 12.
BATCH = {850000010: 10, 850000011: 12, 850000012: "failed", 850000013: 11,
         850000014: 0, 850000015: "missing", 850000016: 60, 850000017: 11}
COMMIT = "4be1c5a0d2f7e3b6a9c8d1e0f2a3b4c5d6e7f809"
DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"
FAILURE_MESSAGE = "Suite2P failed: no ROIs could be extracted (ValueError)"
# The batch and 40 more done runs: a table taller than a few screens, so that the
# browser test sees thumbnails far below the first screen.
LONG_BATCH = BATCH | {850000100 + n: 5 for n in range(40)}
