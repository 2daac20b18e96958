"""The static HTML report: index.html plus one per-sample page per run.

Every page is self-contained (inline CSS, inline SVG charts, a few lines of
inline JavaScript; nothing is fetched), so the folder can be attached to a CI
run or opened from disk. The per-sample pages are separate files because a full
MMLU run has 14k prompts; index.html links to each. Runs are named by their run id,
never by their folder: a page names no file outside the report.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from qwen_evals.analysis.card import Card
from qwen_evals.analysis.charts import Bar, Point, bar_chart, grouped_bar_chart, scatter_chart
from qwen_evals.analysis.results import latest, load_samples, metric_points, model_label, task_label
from qwen_evals.analysis.tables import task_columns
from qwen_evals.core.errors import EvalError

MAX_TEXT = 2000
"""Characters of a prompt (its end) or an output (its start) shown per sample."""
EXTRACTED_FIELDS = ("prediction", "completion", "extracted")
"""Where tasks record the answer they extracted from the output (first present wins)."""
SHOWN_FIELDS = {"id", "prompt", "output", "target", "parse_status", *EXTRACTED_FIELDS}


def _details(record: dict[str, Any], column: str) -> str:
    """The record's other short scalar fields (e.g. a sandbox result), as `key=value; ...`."""
    parts = []
    for key, value in record.items():
        if key in SHOWN_FIELDS or key == column or isinstance(value, (list, dict)) or pd.isna(value):
            continue
        text = _fmt(value, 3)
        if len(text) <= 80:
            parts.append(f"{key}={text}")
    return "; ".join(parts)


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1200px;padding:0 16px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 8px;vertical-align:top}
th{background:#f4f4f4;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
.within{background:#e3f6e3}.outside{background:#fde4e1}.charts{display:flex;flex-wrap:wrap;gap:16px}
pre{white-space:pre-wrap;word-break:break-word;margin:0;max-height:24em;overflow:auto;font-size:12px}
.scroll{overflow-x:auto}tr.wrong td.ok{background:#fde4e1}tr.right td.ok{background:#e3f6e3}.muted{color:#777}
"""

FILTER_JS = """
const rows = Array.from(document.querySelectorAll('#samples tbody tr'));
const filter = document.getElementById('filter');
const search = document.getElementById('search');
const shown = document.getElementById('shown');
function keep(row, mode) {
  const wrong = row.dataset.wrong === '1', unparsed = row.dataset.status === 'unparsed';
  if (mode === 'wrong') return wrong;
  if (mode === 'unparsed') return unparsed;
  if (mode === 'wrong-or-unparsed') return wrong || unparsed;
  return true;
}
function apply() {
  const mode = filter.value, query = search.value.trim().toLowerCase();
  let n = 0;
  for (const row of rows) {
    const ok = keep(row, mode) && (!query || row.dataset.id.toLowerCase().includes(query));
    row.hidden = !ok;
    if (ok) n += 1;
  }
  shown.textContent = n;
}
filter.addEventListener('change', () => { history.replaceState(null, '', '#filter=' + filter.value); apply(); });
search.addEventListener('input', apply);
const asked = location.hash.match(/filter=([\\w-]+)/);
if (asked && Array.from(filter.options).some(o => o.value === asked[1])) filter.value = asked[1];
apply();
"""


def run_slug(run: pd.Series) -> str:
    """A file name for a run's sample page: readable identity plus a hash of its folder (unique)."""
    digest = hashlib.sha1(str(run["run_dir"]).encode()).hexdigest()[:8]
    name = "-".join(str(run[f]) for f in ("task", "protocol", "model", "precision") if run.get(f))
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) + f"-{digest}"


def _page(title: str, body: str, script: str = "") -> str:
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}"
        + (f"<script>{script}</script>" if script else "")
        + "</body></html>\n"
    )


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 10**-digits or value == 0 else f"{value:.2g}"
    return str(value)


def html_table(frame: pd.DataFrame, row_class: str | None = None, links: dict[str, str] | None = None) -> str:
    """A plain table; `row_class` names a column whose value becomes the row's class; `links` maps column -> href column."""
    links = links or {}
    shown = [c for c in frame.columns if c not in set(links.values())]
    head = "".join(f"<th>{escape(str(c))}</th>" for c in shown)
    body = []
    for _, row in frame.iterrows():
        cells = []
        for c in shown:
            value = row[c]
            text = escape(_fmt(value))
            if c in links and isinstance(row[links[c]], str):
                text = f'<a href="{escape(row[links[c]])}">{text}</a>'
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>")
        cls = f' class="{escape(str(row[row_class]))}"' if row_class else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def write_report(out: Path, runs: pd.DataFrame, frames: dict[str, pd.DataFrame], card: Card | None) -> Path:
    """index.html and samples/<run>.html under `out`; returns the index path."""
    (out / "samples").mkdir(parents=True, exist_ok=True)
    current = latest(runs)
    slugs = {run["run_dir"]: run_slug(run) for _, run in runs.iterrows()}
    for _, run in runs.iterrows():
        (out / "samples" / f"{slugs[run['run_dir']]}.html").write_text(sample_page(run), encoding="utf-8")
    sections = [
        f"<h1>Leaderboard</h1><p>{len(runs)} runs; scores in points, ± and error bars are 95% bootstrap "
        "confidence intervals." + (f" Reference: {escape(card.name)}." if card else "") + "</p>",
        '<h2 id="table">Models × tasks</h2>' + html_table(frames["display"]),
        '<h2 id="tasks">Scores by task</h2><div class="charts">' + task_charts(current, card) + "</div>",
        '<h2 id="categories">Categories</h2><div class="charts">' + category_charts(frames["categories"]) + "</div>",
        '<h2 id="quantization">Precision: accuracy vs memory</h2>' + quantization_section(frames["quantization"], card),
    ]
    if card is not None and not frames["card_parity"].empty:
        view = frames["card_parity"].drop(columns=["run_dir"], errors="ignore")
        tol = frames["card_parity"].attrs.get("tolerance", card.tolerance)
        sections.append(
            f'<h2 id="parity">Card parity (tolerance ± {tol:g} points)</h2>'
            f"<p>Delta = run − card; its CI is the run's 95% CI shifted by the card value. Sources: "
            + "; ".join(f"<b>{escape(k)}</b>: {escape(v)}" for k, v in card.sources.items())
            + "</p>"
            + html_table(view, row_class="status")
        )
    sections.append('<h2 id="runs">Runs and their samples</h2>' + runs_table(runs, slugs))
    index = out / "index.html"
    index.write_text(_page("Leaderboard", "\n".join(sections)), encoding="utf-8")
    return index


def task_charts(current: pd.DataFrame, card: Card | None) -> str:
    charts = []
    for column in task_columns(current):
        runs = current[current.apply(column.selects, axis=1)]
        bars = [Bar(model_label(r), *metric_points(r, column.metric)) for _, r in runs.iterrows()]
        reference = card.headline(column.task, column.protocol, column.split, column.metric) if card else None
        charts.append(bar_chart(f"{column.label} ({column.metric})", bars, reference, "card"))
    return "".join(charts)


def category_charts(categories: pd.DataFrame) -> str:
    if categories.empty:
        return '<p class="muted">No run has a category table.</p>'
    charts = []
    for (task, protocol, split), part in categories.groupby(["task", "protocol", "split"], dropna=False):
        names = list(dict.fromkeys(part["category"]))
        series = []
        for run, rows in part.groupby("run", sort=False):
            by = {r["category"]: Bar(r["category"], r["score"], r["ci_low"], r["ci_high"]) for _, r in rows.iterrows()}
            series.append((run, [by.get(n, Bar(n, math.nan)) for n in names]))
        charts.append(grouped_bar_chart(f"{task_label(task)} {protocol} {split}: by category", names, series))
    return "".join(charts)


def quantization_section(quant: pd.DataFrame, card: Card | None) -> str:
    if quant.empty:
        return '<p class="muted">No model was run at two or more precisions.</p>'
    points = []
    for _, row in quant.iterrows():
        series = f"{row['model']} {row['task']} ({row['memory_device']})"
        points.append(Point(series, row["precision"], row["peak_memory_gb"], row["score"], row["ci_low"],
                            row["ci_high"]))  # fmt: skip
        if not math.isnan(row["card_memory_gb"]):
            points.append(Point(f"card {row['task']}", row["precision"], row["card_memory_gb"], row["card_score"],
                                hollow=True))  # fmt: skip
    plotted = [p for p in points if not math.isnan(p.x)]
    chart = (
        scatter_chart("Score vs peak memory (hollow: card)", plotted, "peak memory (GiB)", "score (points)")
        if plotted
        else '<p class="muted">No run recorded its peak memory (fake or served backends).</p>'
    )
    return chart + html_table(quant.drop(columns="run_dir"))


def runs_table(runs: pd.DataFrame, slugs: dict[str, str]) -> str:
    rows = []
    for _, run in runs.sort_values(["task", "model", "precision"]).iterrows():
        page = f"samples/{slugs[run['run_dir']]}.html"
        rows.append(
            "<tr>"
            + "".join(f"<td>{escape(_fmt(run[f]))}</td>" for f in ("task", "protocol", "split"))
            + f"<td>{escape(model_label(run))}</td>"
            + "".join(f'<td class="num">{_fmt(run[f], 2)}</td>' for f in ("n_samples", "score", "unparsed_rate",
                                                                           "wall_seconds", "peak_memory_gb"))
            + f'<td><a class="samples" href="{page}">samples</a> · <a href="{page}#filter=wrong">wrong</a> · '
            f'<a href="{page}#filter=unparsed">unparsed</a></td>'
            f'<td class="muted">{escape(_fmt(run["run_id"]))}{" (partial)" if run["partial"] else ""}</td></tr>'
        )  # fmt: skip
    head = "".join(f"<th>{h}</th>" for h in ("task", "protocol", "split", "model", "n", "score", "unparsed",
                                              "wall s", "peak GiB", "per-sample view", "run"))  # fmt: skip
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _text(value: Any, keep_end: bool) -> str:
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        text = "\n\n".join(f"[{m['role']}]\n{m.get('content', '')}" for m in value)
    elif isinstance(value, str):
        text = value
    elif value is None or (isinstance(value, float) and math.isnan(value)):
        text = ""
    else:
        text = json.dumps(value, ensure_ascii=False, indent=1)
    if len(text) > MAX_TEXT:
        text = "…" + text[-MAX_TEXT:] if keep_end else text[:MAX_TEXT] + "…"
    return text


def sample_page(run: pd.Series) -> str:
    """Per-sample view of one run: prompt, output, extracted answer, gold, score, parse status; filterable."""
    title = f"{task_label(run['task'])} {run['protocol']} — {model_label(run)}"
    try:
        samples = load_samples(run["run_dir"])
    except EvalError as error:
        return _page(title, f"<h1>{escape(title)}</h1><p>{escape(str(error))}</p>")
    column, higher = run["metric_column"], run["higher_is_better"]
    rows = []
    for record in samples.to_dict(orient="records"):
        value = record.get(column)
        score = float(value) if isinstance(value, (bool, int, float)) and not pd.isna(value) else None
        wrong = "" if score is None else "1" if (score < 1 if higher else score > 0) else "0"
        statuses = record.get("parse_status")  # a list when a task samples several outputs per item
        statuses = [str(s) for s in statuses] if isinstance(statuses, list) else [str(statuses or "")]
        status = "unparsed" if "unparsed" in statuses else statuses[0]
        extracted = next((record[k] for k in EXTRACTED_FIELDS if record.get(k) is not None), None)
        verdict = {"1": "wrong", "0": "right"}.get(wrong, "")
        rows.append(
            f'<tr class="{verdict}" data-id="{escape(str(record["id"]))}" data-wrong="{wrong}" data-status="{escape(status)}">'
            f"<td>{escape(str(record['id']))}</td>"
            f"<td><details><summary>prompt</summary><pre>{escape(_text(record.get('prompt'), True))}</pre></details></td>"
            f"<td><pre>{escape(_text(record.get('output'), False))}</pre></td>"
            f"<td><pre>{escape(_text(extracted, False))}</pre></td>"
            f"<td><pre>{escape(_text(record.get('target'), False))}</pre></td>"
            f'<td class="ok">{escape(_fmt(value, 2))}</td><td>{escape(", ".join(statuses))}</td>'
            f'<td class="muted">{escape(_details(record, column))}</td></tr>'
        )
    metrics = ", ".join(f"{k} = {_fmt(v, 4)}" for k, v in run["metrics"].items() if isinstance(v, (int, float)))
    binary = samples[column].map(lambda v: v in (0, 1, True, False)).all() if column in samples.columns else True
    wrong_label = "wrong" if binary else f"{column} below 1"
    body = (
        f'<p><a href="../index.html">← leaderboard</a></p><h1>{escape(title)}</h1>'
        f'<p>{escape(metrics)}</p><p class="muted">run {escape(_fmt(run["run_id"]))}</p>'
        '<p><label>show <select id="filter"><option value="all">all samples</option>'
        f'<option value="wrong">{escape(wrong_label)}</option><option value="unparsed">unparsed</option>'
        '<option value="wrong-or-unparsed">wrong or unparsed</option></select></label> '
        '<label>id contains <input id="search" type="search"></label> '
        f'<span id="shown">{len(rows)}</span> of {len(rows)} shown</p>'
        '<table id="samples"><thead><tr><th>id</th><th>prompt</th><th>output</th><th>extracted</th><th>gold</th>'
        f"<th>{escape(column)}</th><th>parse status</th><th>details</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    return _page(title, body, FILTER_JS)
