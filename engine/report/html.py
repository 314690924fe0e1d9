"""The HTML page skeleton, tables and metric formatting shared by the run report and the compare page."""
from __future__ import annotations

import html
from typing import Any, Iterable, Sequence

__all__ = ["esc", "page", "table", "Raw"]

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#fafafa;color:#1d1d1f}
main{max-width:1000px;margin:0 auto;padding:16px 20px 48px}
h1{font-size:22px;margin:8px 0 2px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin:0 0 12px}h3{font-size:14px;margin:16px 0 4px}
figure{margin:10px 0;background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:4px}
svg.chart{width:100%;height:auto;display:block;font-size:11px}
svg .title{font-size:13px;font-weight:600;fill:#333}svg .grid line{stroke:#eee}
svg .yl{text-anchor:end;fill:#666}svg .xl,svg .hl{text-anchor:middle;fill:#666}svg .legend{fill:#333}
svg .cl{text-anchor:middle;font-size:10px;fill:#222}svg .note{text-anchor:middle;fill:#999;font-size:14px}
svg .zero{stroke:#999;stroke-dasharray:3 3}svg .mean{stroke:#1f5fbf;stroke-width:1.5}
svg .frame{fill:none;stroke:#ccc}svg .wl{fill:#555;font-size:11px}
table{border-collapse:collapse;background:#fff;margin:6px 0;font-size:13px}
th,td{border:1px solid #e3e3e3;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f2f2f2}td.l,th.l{text-align:left}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:12px;align-items:start}
.pass{color:#fff;background:#1a9850;padding:1px 6px;border-radius:3px}
.fail{color:#fff;background:#d62728;padding:1px 6px;border-radius:3px}
.note{color:#666;font-style:italic}pre{background:#fff;border:1px solid #e3e3e3;padding:8px;overflow:auto;font-size:12px}
.scroll{max-height:520px;overflow:auto}
"""


def esc(text: Any) -> str:
    """HTML-escape any value's text."""
    return html.escape(str(text), quote=True)


def page(title: str, body: str) -> str:
    """A complete self-contained HTML document: inline CSS, no scripts, no external resources."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body><main>\n{body}\n</main></body></html>\n")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, left: int = 1, cls: str = "") -> str:
    """An HTML table; the first ``left`` columns are left-aligned; cells are escaped unless wrapped in Raw."""
    def cell(tag: str, i: int, v: Any) -> str:
        a = ' class="l"' if i < left else ""
        return f"<{tag}{a}>{v.html if isinstance(v, Raw) else esc(v)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    c = f' class="{cls}"' if cls else ""
    return f"<table{c}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Raw:
    """Markup to put in a table cell as is (already escaped)."""

    def __init__(self, markup: str) -> None:
        self.html = markup
