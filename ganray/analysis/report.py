"""Write the whole report of an experiment into a folder: tables, comparisons, plots, images, index.html.

    OUT/
      index.html              one offline page (images beside it, relative paths, no scripts or CDN)
      trials.parquet          one row per trial and epoch (see ganray.analysis.table)
      comparisons.md          every comparison as Markdown; comparisons/*.csv the same as CSV
      best_config.yaml        the best trial's full config
      plots/*.png  images/*.png|gif  architecture.txt

Every file is written atomically, so re-running (e.g. while the search goes
on) replaces the report in place and a reader never sees a torn file.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import logging

import yaml

from ganray.analysis import compare, images, importance, plots, table
from ganray.analysis.experiment import Experiment, Problem, load_experiment
from ganray.analysis.plots import Figure
from ganray.storage import Storage, join

log = logging.getLogger("ganray.analysis")


@dataclasses.dataclass
class Report:
    """What was written (for the CLI and tests)."""

    out: str
    index: str
    experiment: Experiment
    best: table.Summary | None
    figures: list[Figure]
    comparisons: list[compare.Comparison]
    importances: dict[str, float]
    importance_method: str


def build(uri: str, out: str, storage: Storage | None = None, with_models: bool = True) -> Report:
    """Analyse the experiment at ``uri`` and write the report into ``out`` (a local folder or URI)."""
    storage = storage or Storage()
    exp = load_experiment(uri, storage)
    summaries = table.summarize(exp)
    best = summaries[0] if summaries and summaries[0].best is not None else None
    writer = Storage()  # the report folder is local (or any URI the default settings reach)
    arrow = table.to_arrow(exp)
    _write_parquet(writer, join(out, "trials.parquet"), arrow)

    comps = compare.comparisons(summaries, exp.metric, exp.mode)
    imp, method = importance.importances(exp.space, summaries, exp.mode)
    comps.append(compare.Comparison("importance", "Hyperparameter importance", ["parameter", "importance"], [[k, v] for k, v in imp.items()], method))  # fmt: skip
    for c in comps:
        writer.write_text(join(out, "comparisons", f"{c.slug}.csv"), c.csv())
    writer.write_text(join(out, "comparisons.md"), "\n".join(c.markdown() for c in comps))
    if best is not None:
        writer.write_text(join(out, "best_config.yaml"), yaml.safe_dump(best.trial.config, sort_keys=False))

    label = table.metric_label(exp)
    figures = plots.all_plots(summaries, exp.metric, imp, method, label)
    arch = ""
    if best is not None:
        figures += images.grid_figures(best.trial, storage, exp.problems)
        if with_models:
            more, arch = images.model_figures(best.trial, best.best_epoch, storage, exp.problems)
            figures += more
    for f in figures:
        writer.write_bytes(join(out, f.path), f.data)
    if arch:
        writer.write_text(join(out, "architecture.txt"), arch)
    index = join(out, "index.html")
    writer.write_text(index, render(exp, summaries, best, comps, figures, arch, label))
    return Report(out, index, exp, best, figures, comps, imp, method)


def _write_parquet(storage: Storage, uri: str, arrow) -> None:
    import pyarrow.parquet as pq

    storage.atomic_write(uri, lambda fh: pq.write_table(arrow, fh))


# ---------------------------------------------------------------- HTML

CSS = """
body{font-family:sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f2f2f2} figure{display:inline-block;margin:.6em;vertical-align:top;max-width:100%}
figure img{max-width:100%;min-width:200px;height:auto;image-rendering:pixelated;border:1px solid #ddd}
figcaption{font-size:.85em;color:#444;max-width:520px} pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.8em}
.errored{color:#a00} .stopped{color:#a60} .running{color:#06a} .problems{background:#fff3f3;border:1px solid #e99;padding:.5em 1em}
"""


def _e(v) -> str:
    return html.escape(compare.fmt(v))


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(f: Figure) -> str:
    cap = html.escape(f.caption)
    return f'<figure><img src="{html.escape(f.path)}" alt="{cap}"><figcaption>{cap}</figcaption></figure>'


def _trials_table(summaries: list[table.Summary], metric: str) -> str:
    rows = []
    for s in summaries:
        t = s.trial
        params = ", ".join(f"{k}={compare.fmt(v)}" for k, v in sorted(t.params.items()))
        rows.append(
            f'<tr class="{html.escape(t.status)}"><td>{html.escape(t.trial_id)}</td>'
            f"<td>{html.escape(t.status)}</td><td>{_e(s.best)}</td><td>{_e(s.best_epoch)}</td>"
            f"<td>{s.epochs}</td><td>{html.escape(params)}</td><td>{html.escape(t.error or '')}</td></tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in ("trial", "status", f"best {metric}", "at epoch", "epochs", "params", "error"))  # fmt: skip
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def render(
    exp: Experiment,
    summaries: list[table.Summary],
    best: table.Summary | None,
    comps: list[compare.Comparison],
    figures: list[Figure],
    arch: str,
    label: str = "",
) -> str:
    """The report page (sections in the issue's order: table, comparisons, plots, images)."""
    m, label = exp.metric, label or exp.metric.upper()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>ganray report: {html.escape(exp.uri)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>ganray report</h1><p>Experiment <code>{html.escape(exp.uri)}</code>, {len(exp.trials)} trial(s); "
        f"generated {now}. Re-run <code>python -m ganray.analyze</code> to refresh it.</p>",
    ]
    if best is not None:
        parts.append(
            f'<p id="best">Best trial <b id="best-trial">{html.escape(best.trial.trial_id)}</b>: '
            f'{html.escape(label)} <b id="best-fid">{best.best:.2f}</b> at epoch {best.best_epoch} ({html.escape(best.trial.status)})</p>'
        )
    else:
        parts.append(f'<p id="best">No trial has been evaluated ({m}) yet.</p>')
    parts.append(_problems(exp.problems))
    parts.append("<h2>1. Results</h2><p>Every trial and evaluated epoch: <a href='trials.parquet'>trials.parquet</a>.</p>")  # fmt: skip
    parts.append(_trials_table(summaries, m))
    parts.append("<h2>2. Comparisons</h2><p>Also as <a href='comparisons.md'>Markdown</a> and CSV in <a href='comparisons/'>comparisons/</a>.</p>")  # fmt: skip
    for c in comps:
        note = f"<p>{html.escape(c.note)}</p>" if c.note else ""
        parts.append(f"<h3>{html.escape(c.title)}</h3>{note}{_table(c.header, c.rows)}")
    if best is not None:
        parts.append(f"<h3>Config of the best trial {html.escape(best.trial.trial_id)}</h3>")
        rows = compare.config_table(best.trial.config)
        parts.append(f"<details><summary>{len(rows)} values (also in best_config.yaml)</summary>{_table(['key', 'value'], rows)}</details>")  # fmt: skip
    plot_figs = [f for f in figures if f.path.startswith("plots/")]
    img_figs = [f for f in figures if f.path.startswith("images/")]
    parts.append(
        "<h2>3. Plots</h2>" + ("".join(map(_figure, plot_figs)) or "<p>No evaluated epochs yet.</p>")
    )
    parts.append("<h2>4. Images</h2>" + ("".join(map(_figure, img_figs)) or "<p>No sample grids or checkpoints yet.</p>"))  # fmt: skip
    if arch:
        parts.append(
            f"<h3>Architecture (parameters per module)</h3><pre id='architecture'>{html.escape(arch)}</pre>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def _problems(problems: list[Problem]) -> str:
    if not problems:
        return ""
    items = "".join(f"<li><code>{html.escape(p.uri)}</code>: {html.escape(p.message)}</li>" for p in problems)
    return f"<div class='problems' id='problems'><b>Skipped ({len(problems)})</b><ul>{items}</ul></div>"
