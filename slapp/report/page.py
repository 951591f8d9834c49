"""The report as one self-contained HTML page: inline CSS and SVG, no script, no network.

Thumbnails are the segment step's outline PNGs, linked by relative path and
loaded and decoded with the page (not lazily), so a full-page screenshot or a
printout shows every one; rows off screen still skip layout work
(``content-visibility``).
"""
import html
import json
import math
import os
from pathlib import Path

from slapp.db.runs import DONE, FAILED, MISSING
from slapp.report.statistics import (METRICS, MIN_RELATIVE_DEVIATION, MIN_RUNS_FOR_OUTLIERS,
                                     OUTLIER_Z, histogram)

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.4em 0 .4em}
.source{color:#555;margin:0 0 1em;word-break:break-all}
.summary span{display:inline-block;margin-right:1.2em}
.figures{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0;border:1px solid #ddd;padding:.4em}figcaption{font-size:.9em;color:#444}
svg text{font:11px system-ui,sans-serif;fill:#333}
table{border-collapse:collapse}th,td{padding:3px 7px;border-bottom:1px solid #e4e4e4;
text-align:left;vertical-align:middle}th{background:#f4f4f4;position:sticky;top:0}
td.n{text-align:right;font-variant-numeric:tabular-nums}
tbody tr{content-visibility:auto;contain-intrinsic-size:auto 80px}
.done{color:#176f2c}.missing{color:#8a6d00}.failed{color:#b3261e}
.flag{display:inline-block;background:#fde7e4;color:#8c1d18;border-radius:3px;
padding:0 4px;margin:1px 2px 1px 0;font-size:.85em}
.message{color:#b3261e;font-size:.9em;word-break:break-all}
td.code{white-space:nowrap}.flag{white-space:nowrap}
.when,.others{color:#666;font-size:.85em}
img.thumb{width:72px;height:72px;object-fit:contain}
code{font-size:.9em}pre{font-size:.85em;max-height:24em;overflow:auto;background:#f7f7f7;
padding:.5em}
"""

_SVG_WIDTH, _SVG_HEIGHT, _PLOT_TOP, _PLOT_BOTTOM = 250, 150, 18, 122


def _number(value, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:,.{digits}f}"


def _mebibytes(value) -> str:
    return "" if value is None else f"{value / 2 ** 20:,.0f}"


def histogram_svg(values: list[float], label: str, unit: str) -> str:
    """An inline SVG bar chart of the distribution of ``values``.

    Parameters
    ----------
    values : list of float
        The figures of the runs that have one.
    label, unit : str
        What the figures are, for the axis and the tooltips.

    Returns
    -------
    str
        An ``<svg>`` element.
    """
    counts, edges = histogram(values)
    parts = [f'<svg width="{_SVG_WIDTH}" height="{_SVG_HEIGHT}" role="img" '
             f'aria-label="{html.escape(label)} histogram">']
    if len(counts):
        width = (_SVG_WIDTH - 20) / len(counts)
        tallest = max(int(counts.max()), 1)
        for index, count in enumerate(counts):
            height = (_PLOT_BOTTOM - _PLOT_TOP) * count / tallest
            tip = (f"{edges[index]:.3g} to {edges[index + 1]:.3g} {unit}: {count} "
                   f"run{'s' if count != 1 else ''}")
            parts.append(f'<rect x="{10 + index * width:.1f}" y="{_PLOT_BOTTOM - height:.1f}" '
                         f'width="{max(width - 1, 1):.1f}" height="{height:.1f}" '
                         f'fill="#4a78b5"><title>{html.escape(tip)}</title></rect>')
        parts.append(f'<text x="10" y="{_PLOT_BOTTOM + 14}">{edges[0]:.3g}</text>')
        parts.append(f'<text x="{_SVG_WIDTH - 10}" y="{_PLOT_BOTTOM + 14}" '
                     f'text-anchor="end">{edges[-1]:.3g} {html.escape(unit)}</text>')
        parts.append(f'<text x="{_SVG_WIDTH - 10}" y="11" '
                     f'text-anchor="end">max {tallest} runs/bin</text>')
    else:
        parts.append('<text x="10" y="70">no run has this figure</text>')
    parts.append(f'<line x1="10" y1="{_PLOT_BOTTOM}" x2="{_SVG_WIDTH - 10}" '
                 f'y2="{_PLOT_BOTTOM}" stroke="#888"/></svg>')
    return "".join(parts)


def _thumbnail(entry: dict, plot_dir: Path | None, output_dir: Path) -> str:
    if plot_dir is None:
        return ""
    plot = plot_dir / f"{entry['experiment_id']}_{entry['segmentation_run_id']}.png"
    if not plot.is_file():
        return '<span class="missing">no plot</span>'
    link = html.escape(Path(os.path.relpath(plot, output_dir)).as_posix(), quote=True)
    return (f'<a href="{link}"><img class="thumb" src="{link}" '
            f'alt="ROI outlines of experiment {entry["experiment_id"]}"></a>')


def _code(entry: dict) -> str:
    commit = entry["ophys_segmentation_commit_hash"]
    label = entry["code_label"] or commit[:12]
    return f'<span title="{html.escape(commit, quote=True)}">{html.escape(label)}</span>'


def _parameters(entry: dict) -> str:
    digest = entry["parameters_digest"]
    return (f'<a href="#parameters-{html.escape(digest, quote=True)}"><code>'
            f'{html.escape(digest[:10])}</code></a> nbinned {entry["nbinned"]}')


# Table columns after experiment and status: the figures of a done run, which a
# failed entry's message spans instead.
_RUN_COLUMNS = 10


def _run(entry: dict) -> str:
    when = entry["created_at"].strftime("%Y-%m-%d %H:%M")
    return f'run {entry["segmentation_run_id"]}<br><span class="when">{when}</span>'


def _failure(entry: dict) -> str:
    """The failure's class, message, time, and its task's log (or where the task ran)."""
    where = [f"manifest {entry['failure_manifest_path']} index {entry['manifest_index']}",
             f"host {entry['failure_hostname']}"]
    if entry["failure_job"]:
        where.append(f"job {entry['failure_job']}")
    if entry["failure_log_path"]:  # recorded by whatever started the task
        where = [entry["failure_log_path"]]
    return (f'{html.escape(entry["failure_class"] or "")}: '
            f'{html.escape(entry["failure_message"])} '
            f'<span class="when">({entry["failed_at"].strftime("%Y-%m-%d %H:%M")}; '
            f'log: {html.escape(", ".join(where))})</span>')


def _others(entry: dict) -> str:
    runs = entry["other_parameter_run_ids"]
    if not runs:
        return ""
    return (f'<div class="others">other parameters: run{"s" if len(runs) > 1 else ""} '
            f'{", ".join(map(str, runs))} (not counted)</div>')


def _model_cells(entry: dict) -> str:
    """The model's cells beside Suite2P's: "no predictions" when it has none for the run."""
    if entry["n_model_cells"] is None:
        return '<td class="missing">no predictions</td>'
    return (f'<td class="n">{_number(entry["n_model_cells"])} <span class="when">of '
            f'{_number(entry["n_predicted_rois"])} predicted</span></td>')


def _model(model: dict) -> str:
    """Which classifier model the "model cells" column shows."""
    jobs = ", ".join(map(str, model["labeling_job_ids"]))
    return (f'<p class="source">Model cells: the ROIs classifier model {model["id"]} (created '
            f'{model["created_at"].strftime("%Y-%m-%d %H:%M %Z")}, trained on labeling '
            f'job{"s" if len(model["labeling_job_ids"]) != 1 else ""} {html.escape(jobs)}) '
            "calls cells, of the ROIs it has a stored prediction for; the cells column is "
            "Suite2P's own classifier.</p>")


def _row(entry: dict, plot_dir: Path | None, output_dir: Path, with_model: bool) -> str:
    status = entry["status"]
    span = _RUN_COLUMNS + with_model
    cells = [
        f'<td class="n">{entry["manifest_index"]}</td>',
        f'<td>{entry["experiment_id"]}</td>',
        f'<td class="{status}">{status}</td>',
    ]
    if status == DONE:
        cells += _run_cells(entry, plot_dir, output_dir, with_model)
    elif status == FAILED:
        cells.append(f'<td colspan="{span}" class="message">{_failure(entry)}'
                     f'{_others(entry)}</td>')
    else:
        cells.append(f'<td colspan="{span}">{_others(entry)}</td>')
    return f'<tr id="entry-{entry["manifest_index"]}" data-status="{status}">' \
        + "".join(cells) + "</tr>"


def _run_cells(entry: dict, plot_dir: Path | None, output_dir: Path,
               with_model: bool) -> list[str]:
    later = (f'<div class="message">a later task failed: {_failure(entry)}</div>'
             if entry["failure_class"] else "")
    return [
        f'<td class="code">{_run(entry)}{later}{_others(entry)}</td>',
        f'<td class="n">{_number(entry["n_rois"])}</td>',
        f'<td class="n">{_number(entry["n_cells"])}</td>',
        *([_model_cells(entry)] if with_model else []),
        f'<td class="n">{_number(entry["median_npix"])}</td>',
        f'<td class="n">{_number(entry["ms_per_frame"], 2)}</td>',
        f'<td class="n">{_mebibytes(entry["peak_rss_bytes"])}</td>',
        f'<td class="code">{_code(entry)}</td>',
        f'<td class="code">{_parameters(entry)}</td>',
        "<td>" + "".join(f'<span class="flag">{html.escape(flag)}</span>'
                         for flag in entry["flags"]) + "</td>",
        f"<td>{_thumbnail(entry, plot_dir, output_dir)}</td>",
    ]


def _parameter_sets(entries: list[dict]) -> str:
    sets = {}
    for entry in entries:
        if entry["status"] == DONE:
            sets.setdefault(entry["parameters_digest"],
                            [entry["suite2p_version"], entry["suite2p_settings"], 0])[2] += 1
    parts = []
    for digest, (version, settings, count) in sets.items():
        text = json.dumps(settings, indent=1, sort_keys=True)
        parts.append(f'<details id="parameters-{html.escape(digest, quote=True)}"><summary>'
                     f"<code>{html.escape(digest)}</code>: Suite2P {html.escape(version)}, "
                     f"{count} run{'s' if count != 1 else ''}</summary>"
                     f"<pre>{html.escape(text)}</pre></details>")
    return "".join(parts) or "<p>no run yet</p>"


def render_page(entries: list[dict], outliers: dict[str, int], source: str,
                plot_dir: Path | None, output_dir: Path, generated_at: str,
                model: dict | None = None) -> str:
    """The whole report page.

    Parameters
    ----------
    entries : list of dict
        Entries with their figures and ``flags`` (see :mod:`slapp.report.statistics`).
    outliers : dict
        From :func:`slapp.report.statistics.flag_outliers`.
    source : str
        What the batch is (the manifest path or the selection), for the heading.
    plot_dir : pathlib.Path or None
        Where the outline PNGs are (``<experiment_id>_<run id>.png``); None for none.
    output_dir : pathlib.Path
        Where the page goes: image links are relative to it.
    generated_at : str
        When the report was made.
    model : dict, optional
        The ``classifier_models`` row whose predictions the entries carry
        (``n_model_cells``, ``n_predicted_rois``), shown in a column beside
        Suite2P's cells; None for no such column.

    Returns
    -------
    str
        The HTML document.
    """
    by_status = {status: sum(entry["status"] == status for entry in entries)
                 for status in (DONE, MISSING, FAILED)}
    figures = []
    for key, label, unit in METRICS:
        values = [entry[key] for entry in entries if entry.get(key) is not None]
        figures.append(f"<figure>{histogram_svg(values, label, unit)}<figcaption>"
                       f"{html.escape(label)} ({len(values)} runs; "
                       f"{outliers[key]} outlier{'s' if outliers[key] != 1 else ''})"
                       f"</figcaption></figure>")
    header = ("<tr><th>#</th><th>experiment</th><th>status</th><th>run</th><th>ROIs</th>"
              "<th>cells</th>" + ("<th>model cells</th>" if model else "") +
              "<th>median ROI size (px)</th><th>runtime per frame (ms)</th>"
              "<th>peak memory (MiB)</th><th>code version</th><th>parameters</th>"
              "<th>flags</th><th>outlines</th></tr>")
    rows = "\n".join(_row(entry, plot_dir, output_dir, model is not None)
                     for entry in entries)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>slapp segmentation report: {html.escape(source)}</title>"
        f"<style>{_STYLE}</style></head><body>"
        "<h1>Segmentation batch report</h1>"
        f'<p class="source">{html.escape(source)} &middot; generated {html.escape(generated_at)}'
        "</p>" + (_model(model) if model else "") +
        f'<p class="summary"><span><b>{len(entries)}</b> entries</span>'
        f'<span class="done"><b>{by_status[DONE]}</b> done</span>'
        f'<span class="missing"><b>{by_status[MISSING]}</b> missing</span>'
        f'<span class="failed"><b>{by_status[FAILED]}</b> failed</span>'
        f'<span><b>{outliers["zero_roi_runs"]}</b> runs without ROIs</span></p>'
        "<h2>Distributions across the batch</h2>"
        f'<p>Outliers, flagged in the table: robust z-score |0.6745 (x &minus; median) / MAD| '
        f"&gt; {OUTLIER_Z} and more than {MIN_RELATIVE_DEVIATION:.0%} from the median; "
        f"judged when at least {MIN_RUNS_FOR_OUTLIERS} runs have the figure.</p>"
        f'<div class="figures">{"".join(figures)}</div>'
        f"<h2>Entries</h2><table><thead>{header}</thead><tbody>\n{rows}\n</tbody></table>"
        f"<h2>Parameter sets</h2>{_parameter_sets(entries)}"
        "</body></html>\n")
