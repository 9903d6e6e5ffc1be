"""One self-contained HTML page: sections of text, PNG figures (embedded as base64 data URIs) and tables.

The page needs nothing beside itself: it can be mailed, attached to a lab notebook or opened offline.
Every piece of caller text (titles, paragraphs, captions, table cells and labels, provenance) is HTML-escaped,
so a table cell or a description holding '<script>' shows as text and never runs.

Section dict (all keys but ``title`` optional; unknown keys are an error, to catch typos):
    {"title": str,
     "text": str (plain text; blank lines separate paragraphs),
     "missing": str (why a figure of this section is not drawn and what to populate; shown in a marked box),
     "images": [path to a .png, or (path, caption), ...],
     "tables": [DataFrame or (caption, DataFrame), ...]}
A figure's caption says what it shows, from which table, with what n; without one the file name is shown.
Numbers in tables are shown with 4 significant digits (integers in full, NaN as 'NaN').
"""

from __future__ import annotations

import base64
import html
import math
import numbers
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .stats import ReportInputError

__all__ = ["write_report", "format_number", "table_html"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIGNIFICANT_DIGITS = 4
_SECTION_KEYS = {"title", "text", "missing", "images", "tables"}

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ccc; padding-bottom: .3em; }
h2 { margin-top: 2em; border-bottom: 1px solid #e4e4e4; }
.meta { color: #666; font-size: .9em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, caption { color: #555; font-size: .9em; text-align: left; padding: .3em 0; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; }
td { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f4f4f4; }
.table-wrap { overflow-x: auto; max-width: 100%; }
.missing { background: #fff6e0; border-left: 4px solid #e0a000; padding: .5em 1em; }
.provenance td { text-align: left; }
tbody tr:nth-child(even) { background: #fafafa; }
"""


def format_number(value) -> str:
    """A table cell as text: floats with 4 significant digits, integers in full, NaN as 'NaN', else str."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        v = float(value)
        if math.isnan(v):
            return "NaN"
        return f"{v:.{SIGNIFICANT_DIGITS}g}"
    if value is None or value is pd.NA or value is pd.NaT:
        return "NaN"
    return str(value)


def _format_labels(labels: pd.Index) -> pd.Index:
    """Index or column labels as text (every level of a MultiIndex, e.g. (regulariser, alpha))."""
    if labels.nlevels == 1:
        return labels.map(format_number)
    return pd.MultiIndex.from_tuples([tuple(format_number(v) for v in t) for t in labels], names=labels.names)


def table_html(table: pd.DataFrame, caption: str | None = None) -> str:
    """An escaped HTML <table> of ``table`` with its numbers formatted (index and column labels too)."""
    if not isinstance(table, pd.DataFrame):
        raise ReportInputError(f"table: expected a pandas DataFrame, got {type(table).__name__}. "
                               "Fix: wrap it with pd.DataFrame(...)")
    shown = table.map(format_number)
    shown.index = _format_labels(shown.index)
    shown.columns = _format_labels(shown.columns)
    hide_index = isinstance(table.index, pd.RangeIndex) and table.index.name is None
    body = shown.to_html(escape=True, index=not hide_index, border=0, na_rep="NaN")
    if caption:
        body = body.replace(">", f"><caption>{html.escape(str(caption))}</caption>", 1)
    return body


def _image_html(path, caption: str | None = None) -> str:
    p = Path(path)
    if not p.is_file():
        raise ReportInputError(f"image {str(p)!r} does not exist. Fix: save the figure first "
                               "(pipeline.report.figures.save)")
    data = p.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ReportInputError(f"image {str(p)!r} is not a PNG file. Fix: save figures as .png")
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    name = html.escape(p.name)
    text = html.escape(str(caption)) if caption else name
    return f'<figure><img src="{uri}" alt="{name}"><figcaption>{text}</figcaption></figure>'


def _text_html(text: str) -> str:
    paragraphs = [p.strip() for p in str(text).replace("\r\n", "\n").split("\n\n") if p.strip()]
    return "\n".join("<p>" + html.escape(p).replace("\n", "<br>\n") + "</p>" for p in paragraphs)


def _section_html(k: int, section: dict) -> str:
    if not isinstance(section, dict) or "title" not in section:
        raise ReportInputError(f"sections[{k}]: expected a dict with at least 'title' "
                               "(and text, images, tables)")
    unknown = set(section) - _SECTION_KEYS
    if unknown:
        raise ReportInputError(f"sections[{k}]: unknown key(s) {sorted(unknown)}; allowed {sorted(_SECTION_KEYS)}")
    parts = [f"<section>\n<h2>{html.escape(str(section['title']))}</h2>"]
    if section.get("text"):
        parts.append(_text_html(section["text"]))
    if section.get("missing"):
        parts.append('<div class="missing">' + _text_html(section["missing"]) + "</div>")
    images = section.get("images") or []
    tables = section.get("tables") or []
    if isinstance(images, (str, os.PathLike)) or isinstance(tables, pd.DataFrame):
        raise ReportInputError(f"sections[{k}]: 'images' and 'tables' are lists. Fix: wrap a single one in [...]")
    for p in images:
        parts.append(_image_html(*p) if isinstance(p, tuple) and len(p) == 2 else _image_html(p))
    for t in tables:
        if isinstance(t, tuple) and len(t) == 2:
            parts.append('<div class="table-wrap">' + table_html(t[1], caption=t[0]) + "</div>")
        else:
            parts.append('<div class="table-wrap">' + table_html(t) + "</div>")
    parts.append("</section>")
    return "\n".join(parts)


def write_report(outdir, title: str, sections: Sequence[dict], provenance: str = "",
                 generated_at: datetime | None = None) -> Path:
    """Write ``outdir/index.html`` (outdir created) and return its Path.

    title: the page title. sections: list of section dicts (module docstring). provenance: one line saying
    where the numbers come from (e.g. database host, schema prefix, code version), shown under the title.
    generated_at: the timestamp shown (default: now, UTC). The file is written to a temporary name and then
    renamed, so a reader never sees half a page.
    """
    if isinstance(sections, dict) or not isinstance(sections, (list, tuple)):
        raise ReportInputError("'sections': expected a list of section dicts. Fix: wrap one section in [...]")
    stamp = (generated_at or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    body = "\n".join(_section_html(k, s) for k, s in enumerate(sections))
    meta = f"generated at {html.escape(stamp)}"
    if provenance:
        meta += f" &middot; {html.escape(str(provenance))}"
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(str(title))}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(str(title))}</h1>\n<p class=\"meta\">{meta}</p>\n{body}\n</body>\n</html>\n")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    tmp = out / ".index.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
