"""The batch report: one HTML page for every entry of a manifest or a selection.

``python -m slapp.report --manifest_json M --output_dir D`` writes ``D/index.html``
(see :mod:`slapp.report.__main__`). The data flow is
:mod:`~slapp.report.entries` (one query for every entry) ->
:mod:`~slapp.report.statistics` (distributions, outliers) ->
:mod:`~slapp.report.page` (the HTML).
"""
