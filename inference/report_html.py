"""report.html: the page a person reads to pick a checkpoint.

One self-contained file (inline CSS, inline SVG charts, thumbnails embedded as data URIs, each linking
to the full-size image beside it): the metrics table per checkpoint, charts of each metric against the
training step when the checkpoints come from one run, the settings, and a grid per record
(condition | target | each checkpoint, first seed) with each image's own scores under it.

"Best" is only ever claimed by a metric that says whether the condition is followed (edge F1 within the
tolerance, circle IoU, OCR sentence accuracy): an SSIM or CLIP score can favour a checkpoint that ignores
its condition. The run's ``best/`` (kept by training's ``validation.select_best``) is named as such. The
grid scales its cells to the window, so every checkpoint column is visible without scrolling sideways.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from PIL import Image

from common.atomic import atomic_write_text
from common.run_layout import SELECTION_FILE
from inference.checkpoints import BEST_NAME, checkpoint_label
from inference.evaluate import REFERENCE
from inference.plot import line_chart
from inference.protocols import ANYTEXT, CONTROLNETPP, NATIVE, protocol_of

__all__ = ["MAX_ROWS", "REPORT_HTML", "RecordRow", "write_html_report"]

REPORT_HTML = "report.html"
MAX_ROWS = 64
"""Records shown in the grid; the page embeds every thumbnail, so 1000 rows would be ~100 MB."""
THUMBNAIL = 256
_METRICS: tuple[tuple[str, str, bool], ...] = (
    # key, column title, higher is better. The *_normalized_edit_distance scores are 1 - NED (1: every
    # line read exactly), so the column says so instead of "NED", where lower would be better.
    ("edge_f1", "edge F1", True),
    ("edge_f1_tolerant", "edge F1 (±{tol}px)", True),
    ("edge_ssim", "edge SSIM", True),
    ("circle_iou", "circle IoU", True),
    ("sentence_accuracy", "OCR sentence acc.", True),
    ("normalized_edit_distance", "OCR 1−NED", True),
    ("controlnetpp_edge_f1", "edge F1 ×100", True),
    ("controlnetpp_edge_ms_ssim", "edge MS-SSIM", True),
    ("anytext_sentence_accuracy", "OCR sentence acc.", True),
    ("anytext_normalized_edit_distance", "OCR 1−NED", True),
    ("clip_score", "CLIP score", True),
    ("fid", "FID", False),
)
_FOLLOWS = ("edge_f1_tolerant", "circle_iou", "sentence_accuracy")
"""The columns that say whether an image follows its condition (the outline, the disk, the labels): the
only ones whose best value is marked, and the ones the best checkpoint is named by."""
_PROTOCOL_TITLES = {NATIVE: "native", CONTROLNETPP: "ControlNet++ protocol", ANYTEXT: "AnyText protocol"}
_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #111827; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.muted { color: #6b7280; } a { color: #1d4ed8; }
table { border-collapse: collapse; } th, td { padding: 4px 10px; border-bottom: 1px solid #e5e7eb; }
th { text-align: left; background: #f3f4f6; font-weight: 600; } td.num { text-align: right; }
th.protocol { text-align: center; border-bottom: 2px solid #d1d5db; }
tr.reference td { font-style: italic; color: #4b5563; } td.best { font-weight: 700; color: #047857; }
.tag { display: inline-block; margin-left: 6px; padding: 0 6px; border-radius: 9px; font-size: 11px;
  background: #d1fae5; color: #065f46; font-style: normal; }
.tag.kept { background: #dbeafe; color: #1e40af; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.chart { border: 1px solid #e5e7eb; border-radius: 6px; background: #fff; }
.chart-title { font-size: 13px; font-weight: 600; } .tick { font-size: 10px; fill: #6b7280; }
.axis { stroke: #9ca3af; }
table.grid { width: 100%; max-width: calc(120px + var(--columns) * 186px); table-layout: fixed; }
table.grid td { vertical-align: top; border: none; padding: 3px; overflow-wrap: anywhere; }
table.grid th { text-align: center; position: sticky; top: 0; z-index: 1; overflow-wrap: anywhere;
  font-size: 12px; padding: 4px 2px; } table.grid col.prompt { width: 120px; }
figure { margin: 0; text-align: center; } figcaption { font-size: 11px; color: #374151; }
img.cell { width: 100%; max-width: 176px; height: auto; aspect-ratio: 1; object-fit: contain;
  background: #f9fafb; image-rendering: pixelated; border: 1px solid #e5e7eb; box-sizing: border-box; }
.missing { width: 100%; max-width: 176px; aspect-ratio: 1; margin: 0 auto; background: #e5e7eb;
  display: flex; align-items: center; justify-content: center; color: #6b7280; }
td.prompt { font-size: 12px; }
dl.settings { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 2px 16px; margin: 0; }
dl.settings dt { color: #6b7280; }
dl.settings dd { margin: 0; font-family: ui-monospace, monospace; overflow-wrap: anywhere; }
"""


@dataclass(frozen=True)
class RecordRow:
    """One grid row: a record's condition, target and first-seed image per checkpoint."""

    record: int
    prompt: str
    condition: Path
    target: Path | None
    images: Mapping[str, Path | None]
    gt_text: Sequence[str] | None = None


def _data_uri(path: Path) -> str:
    """A thumbnail of ``path`` as a data URI: PNG or JPEG, whichever is smaller (edge maps vs photos)."""
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    image.thumbnail((THUMBNAIL, THUMBNAIL), Image.Resampling.LANCZOS)
    encoded = {}
    for fmt, options in (("PNG", {"optimize": True}), ("JPEG", {"quality": 90})):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        encoded[fmt] = buffer.getvalue()
    fmt = min(encoded, key=lambda key: len(encoded[key]))
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(encoded[fmt]).decode('ascii')}"


def _number(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def _reader_metrics(summary: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, bool]]:
    """Each named OCR reader's columns (``<reader>/sentence_accuracy``...), side by side."""
    readers = dict.fromkeys(
        k.split("/")[0] for row in summary for k in row if k.endswith("/sentence_accuracy")
    )
    return [
        column
        for r in readers
        for column in (
            (f"{r}/sentence_accuracy", f"{r} sentence acc.", True),
            (f"{r}/normalized_edit_distance", f"{r} 1−NED", True),
        )
    ]


def _columns(summary: Sequence[Mapping[str, Any]], tolerance: int) -> list[tuple[str, str, bool]]:
    """The metric columns that at least one checkpoint has a value for; each OCR reader's after the
    native ones."""
    metrics = []
    for metric in _METRICS:
        metrics.append(metric)
        if metric[0] == "normalized_edit_distance":
            metrics += _reader_metrics(summary)
    return [
        (key, title.format(tol=tolerance), higher)
        for key, title, higher in metrics
        if any(row.get(key) is not None for row in summary)
    ]


def _titled(key: str, title: str) -> str:
    """A column's title with its protocol, for charts (which stand alone, outside the table header)."""
    protocol = protocol_of(key)
    return f"{title} ({_PROTOCOL_TITLES[protocol]})" if protocol not in (None, NATIVE) else title


def _protocol_header(columns: Sequence[tuple[str, str, bool]]) -> str:
    """The header row above the metric titles: which protocol made each column."""
    groups: list[tuple[str, int]] = []
    for key, _, _ in columns:
        protocol = protocol_of(key)
        label = _PROTOCOL_TITLES[protocol] if protocol else "native, by reader" if "/" in key else ""
        if groups and groups[-1][0] == label:
            groups[-1] = (label, groups[-1][1] + 1)
        else:
            groups.append((label, 1))
    return "".join(f"<th colspan='{n}' class='protocol'>{escape(label)}</th>" for label, n in groups)


_ARROW = {True: "↑", False: "↓"}


def _checkpoint_label(row: Mapping[str, Any]) -> str:
    """A checkpoint's name in the table; a run's final and best weights with their step."""
    return checkpoint_label(row["checkpoint"], row.get("step"))


def _is_run_best(name: str) -> bool:
    return name == BEST_NAME or name.endswith(f"-{BEST_NAME}")


def _selections(report: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Each run ``best/`` column's selection.json (metric, step, score), keyed by checkpoint name."""
    found = {}
    for entry in report.get("checkpoints", []):
        folder = entry.get("controlnet_dir")
        if not (_is_run_best(entry["name"]) and folder):
            continue
        path = Path(folder) / SELECTION_FILE
        try:
            selection = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # the column is still named best; only how it was chosen goes unsaid
        if isinstance(selection, dict):
            found[entry["name"]] = selection
    return found


def _kept_tag(selection: Mapping[str, Any] | None) -> str:
    """The tag of a run's best/ column: chosen by training, on its own validation set."""
    if selection is None:
        return "<span class='tag kept'>kept by training</span>"
    score = selection.get("score")
    shown = f" {score:.3f}" if isinstance(score, int | float) else ""
    return (
        f"<span class='tag kept' title='validation.select_best: the best validated ControlNet of the run'>"
        f"kept by training: {escape(str(selection.get('metric')))}{shown}</span>"
    )


def _best(summary: Sequence[Mapping[str, Any]], key: str, higher: bool) -> float | None:
    """The best checkpoint value of a column; None when there is nothing to single out (all equal)."""
    values = [row[key] for row in summary if not row["reference"] and row.get(key) is not None]
    if len(set(values)) < 2:
        return None
    return max(values) if higher else min(values)


def _metrics_table(
    summary: Sequence[Mapping[str, Any]],
    seconds: Mapping[str, float | None],
    tol: int,
    selections: Mapping[str, Mapping[str, Any]],
) -> str:
    columns = _columns(summary, tol)
    head = "".join(f"<th>{escape(title)} {_ARROW[higher]}</th>" for _, title, higher in columns)
    lines = [
        "<table class='metrics'><tr><th rowspan='2'>checkpoint</th><th rowspan='2'>step</th>"
        f"<th rowspan='2'>images</th><th rowspan='2'>OCR lines</th>{_protocol_header(columns)}"
        f"<th rowspan='2'>s / image (this run)</th></tr><tr>{head}</tr>"
    ]
    best = {key: _best(summary, key, higher) for key, _, higher in columns if key in _FOLLOWS}
    for row in summary:
        cells, tags = [], []
        for key, title, _ in columns:
            won = best.get(key) is not None and row.get(key) == best[key] and not row["reference"]
            cells.append(f"<td class='num{' best' if won else ''}'>{_number(row.get(key))}</td>")
            if won:
                tags.append(f"<span class='tag'>best by {escape(title)}</span>")
        if _is_run_best(row["checkpoint"]):
            tags.append(_kept_tag(selections.get(row["checkpoint"])))
        name = f"{row['checkpoint']} (reference)" if row["reference"] else _checkpoint_label(row)
        lines.append(
            f"<tr class='{'reference' if row['reference'] else ''}'><td>{escape(name)}{''.join(tags)}</td>"
            f"<td class='num'>{_number(row.get('step'))}</td><td class='num'>{row['images']}</td>"
            f"<td class='num'>{row.get('text_lines') or 0}</td>{''.join(cells)}"
            f"<td class='num'>{_number(seconds.get(row['checkpoint']))}</td></tr>"
        )
    lines.append("</table>")
    return "\n".join(lines)


def _charts(summary: Sequence[Mapping[str, Any]], plot_steps: Mapping[str, int], tol: int) -> str:
    """One chart per metric against step, with the target images' score as the dashed reference."""
    reference = next((row for row in summary if row["reference"]), None)
    twins = {step for name, step in plot_steps.items() if not _is_run_best(name)}
    plot_steps = {  # a run's best/ is a copy of the checkpoint at its step: one point per step
        name: step for name, step in plot_steps.items() if not (_is_run_best(name) and step in twins)
    }
    charts = []
    for key, title, _ in _columns(summary, tol):
        points = [
            (plot_steps[row["checkpoint"]], float(row[key]))
            for row in summary
            if row["checkpoint"] in plot_steps and row.get(key) is not None
        ]
        if len(points) >= 2:
            level = reference.get(key) if reference else None
            charts.append(line_chart(points, _titled(key, title), level, "target:"))
    return f"<div class='charts'>{''.join(charts)}</div>" if charts else ""


def _settings(report: Mapping[str, Any], metric_settings: Mapping[str, Any] | None) -> str:
    """Everything that made these numbers, flattened to 'section.key: value' lines."""
    sections = {
        "generation": report.get("settings", {}),
        "run": {key: report.get(key) for key in ("data", "records", "seeds", "batch_size", "device")},
        "speed": report.get("speed", {}),
        "metrics": metric_settings or {"computed": False},
    }
    items = []
    for section, values in sections.items():
        for key, value in values.items():
            text = value if isinstance(value, str) and value else json.dumps(value, ensure_ascii=False)
            items.append(f"<dt>{escape(section)}.{escape(key)}</dt><dd>{escape(text)}</dd>")
    return f"<dl class='settings'>{''.join(items)}</dl>"


def _protocol_notes(metrics: Mapping[str, Any] | None, settings: Mapping[str, Any] | None) -> str:
    """Under the table: how each protocol's numbers were made and which paper they compare with."""
    described = (metrics or {}).get("protocols") or {}
    edges = (settings or {}).get("edges") or {}
    detector = (
        f"cv2.Canny {edges.get('low')}/{edges.get('high')} ({edges.get('origin', 'default')})"
        if edges
        else ""
    )
    items = []
    if NATIVE in described or not described:  # metrics.json files before protocols were all native
        items.append(
            f"<li><b>native</b> (ours): Canny ({escape(detector)}) of the output against the condition; "
            "F1 exact per pixel, within the tolerance, and SSIM, mean over images. OCR: each labelled box "
            "read on its own, pooled over all lines. Compares with other skinforge reports only.</li>"
        )
    for protocol in (CONTROLNETPP, ANYTEXT):
        if protocol in described:
            info = described[protocol]
            extra = f" Recogniser: {info['recogniser']}." if "recogniser" in info else ""
            items.append(
                f"<li><b>{escape(_PROTOCOL_TITLES[protocol])}</b>: follows {escape(info['follows'])}. "
                f"Comparable with: {escape(info['comparable_with'])}.{escape(extra)}</li>"
            )
    return (
        "<p class='muted'>↑ higher is better, ↓ lower is better (each column says which; OCR 1−NED is one "
        "minus the normalised edit distance, 1 when every line is read exactly). Only the columns that say "
        "whether the condition is followed (edge F1 within the tolerance, circle IoU, OCR sentence accuracy) "
        "mark a best checkpoint: an SSIM or CLIP score can favour one that ignores its condition. The "
        "<b>target</b> row scores each record's training image against its own condition: the level to "
        "reach. Its strict edge F1 is below 1 because Canny finds a 1-px edge at the rim of a filled shape "
        "where the condition draws a wider outline (2 px in the fill data), so the tolerant F1 is the one "
        f"to compare.</p><ul class='muted'>{''.join(items)}</ul>"
    )


def _short(value: float) -> str:
    """Two decimals, without the '-0.00' a tiny negative SSIM would print."""
    return f"{round(value, 2) + 0.0:.2f}"


def _caption(row: Mapping[str, Any] | None, tol: int) -> str:
    """One image's scores, under its thumbnail."""
    if row is None:
        return ""
    parts = []
    if row.get("edge_f1") is not None:
        parts.append(f"edge F1 {_short(row['edge_f1'])} · ±{tol}px {_short(row['edge_f1_tolerant'])}")
        parts.append(f"edge SSIM {_short(row['edge_ssim'])}")
    if row.get("text_lines"):
        exact = round(row["sentence_accuracy"] * row["text_lines"])
        read = " | ".join(row["ocr_read"])
        parts.append(
            f"OCR {exact}/{row['text_lines']} exact · 1−NED {_short(row['normalized_edit_distance'])}"
        )
        parts.append(f"read: {read[:60]}")
    for reader in (k.removesuffix("/lines") for k in row if k.endswith("/lines") and row[k]):
        lines, read = row[f"{reader}/lines"], " | ".join(row[f"{reader}/read"])
        exact = round(row[f"{reader}/sentence_accuracy"] * lines)
        parts.append(f"{reader}: {exact}/{lines} exact, read: {read[:50]}")
    if row.get("controlnetpp_edge_f1") is not None:
        ms_ssim = row.get("controlnetpp_edge_ms_ssim")
        ssim_text = f" · MS-SSIM {_short(ms_ssim)}" if ms_ssim is not None else ""
        parts.append(f"ControlNet++: F1 {row['controlnetpp_edge_f1']:.1f}{ssim_text}")
    if row.get("anytext_lines"):
        exact = round(row["anytext_sentence_accuracy"] * row["anytext_lines"])
        ned = _short(row["anytext_normalized_edit_distance"])
        parts.append(f"AnyText: {exact}/{row['anytext_lines']} exact · 1−NED {ned}")
    if row.get("clip_score") is not None:
        parts.append(f"CLIP {row['clip_score']:.1f}")
    return "<br>".join(escape(part) for part in parts)


def _cell(path: Path | None, out: Path, caption: str = "") -> str:
    if path is None or not path.is_file():
        return "<td><div class='missing'>missing</div></td>"
    href = path.relative_to(out).as_posix() if path.is_relative_to(out) else path.as_uri()
    return (
        f"<td><figure><a href='{escape(href)}'><img class='cell' src='{_data_uri(path)}' "
        f"alt='{escape(path.name)}'></a><figcaption>{caption}</figcaption></figure></td>"
    )


def _grid(
    rows: Sequence[RecordRow],
    names: Sequence[str],
    steps: Mapping[str, int | None],
    scores: Mapping[tuple[str, str], Any],
    out: Path,
    tol: int,
) -> str:
    head = "".join(f"<th>{title}</th>" for title in ("record", "condition", "target"))
    for name in names:
        kept = "<br><span class='tag kept'>kept by training</span>" if _is_run_best(name) else ""
        head += f"<th>{escape(checkpoint_label(name, steps.get(name)))}{kept}</th>"
    n_images = len(names) + 2
    # fixed layout: the columns share the window's width (each cell at most 176 px), never wider
    lines = [
        f"<table class='grid' style='--columns: {n_images}'><colgroup><col class='prompt'>"
        f"{'<col>' * n_images}</colgroup><tr>{head}</tr>"
    ]
    for row in rows[:MAX_ROWS]:
        truth = (
            f"<br><span class='muted'>labels: {escape(' | '.join(row.gt_text))}</span>" if row.gt_text else ""
        )
        cells = [f"<td class='prompt'><b>#{row.record}</b><br>{escape(row.prompt)}{truth}</td>"]
        target_score = scores.get((REFERENCE, str(row.target))) if row.target else None
        cells += [_cell(row.condition, out), _cell(row.target, out, _caption(target_score, tol))]
        for name in names:
            path = row.images.get(name)
            score = scores.get((name, str(path))) if path else None
            cells.append(_cell(path, out, _caption(score, tol)))
        lines.append(f"<tr>{''.join(cells)}</tr>")
    lines.append("</table>")
    if len(rows) > MAX_ROWS:
        lines.append(f"<p class='muted'>First {MAX_ROWS} of {len(rows)} records shown; all are scored.</p>")
    return "\n".join(lines)


def _image_scores(metrics: Mapping[str, Any] | None, out: Path) -> dict[tuple[str, str], Any]:
    """Per-image metric rows keyed by (checkpoint, absolute path as str)."""
    if not metrics:
        return {}
    index = {}
    for row in metrics["images"]:
        path = Path(row["path"])
        index[(row["checkpoint"], str(path if path.is_absolute() else out / path))] = row
    return index


def write_html_report(
    out: Path,
    report: Mapping[str, Any],
    metrics: Mapping[str, Any] | None,
    rows: Sequence[RecordRow],
    plot_steps: Mapping[str, int],
) -> Path:
    """Write ``out/report.html`` from report.json's content, metrics.json's content and the grid rows.

    ``plot_steps`` maps the checkpoints of one run to their step; with two or more, metrics are charted.
    """
    names = [entry["name"] for entry in report["checkpoints"]]
    seconds = {entry["name"]: entry.get("seconds_per_image") for entry in report["checkpoints"]}
    steps = {entry["name"]: entry.get("step") for entry in report["checkpoints"]}
    settings = metrics["metric_settings"] if metrics else None
    tol = settings["edges"]["tolerance"] if settings else 0
    summary = metrics["summary"] if metrics else []
    body = [
        "<h1>Checkpoint evaluation</h1>",
        f"<p class='muted'>{escape(str(report['data']))} · {report['records']} records × "
        f"{len(report['seeds'])} seed(s) · {len(names)} checkpoint(s) · "
        "<a href='metrics.csv'>metrics.csv</a> · <a href='metrics.json'>metrics.json</a> · "
        "<a href='report.json'>report.json</a> · <a href='grid.png'>grid.png</a></p>",
    ]
    if summary:
        body += ["<h2>Metrics</h2>", _metrics_table(summary, seconds, tol, _selections(report))]
        body.append(_protocol_notes(metrics, settings))
        charts = _charts(summary, plot_steps, tol)
        if charts:
            body += ["<h2>Metrics vs training step</h2>", charts]
    body += ["<h2>Images</h2>", _grid(rows, names, steps, _image_scores(metrics, out), out, tol)]
    body += ["<h2>Settings</h2>", _settings(report, settings)]
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>skinforge evaluation: {escape(Path(str(report['data'])).parent.name)}</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    path = out / REPORT_HTML
    atomic_write_text(path, page)
    return path
