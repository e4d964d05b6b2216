"""Every table budgetnas prints or writes, in one place: terminal text (rich), Markdown and HTML.

Why one module: the CLI, ``reproduce`` (RESULTS.md, results.html), ``report`` and ``sweep``
(SWEEP.md) used to format tables by hand, each slightly differently. Terminal tables are laid
out by ``rich`` (column widths, alignment, wide cells); rich does not write Markdown or HTML,
so those two are the small renderers below, which escape cells the way each format needs
(``|`` inside a Markdown cell, ``<``/``&`` in HTML).

Cells are given as strings (callers format numbers with :mod:`budgetnas.fmt`); ``rows`` are
sequences of cells, or dicts picked by :func:`select` with ``columns = [(key, header)]``.
"""

from __future__ import annotations

import html as _html
import io
from typing import Any, Mapping, Sequence

from rich import box
from rich.console import Console
from rich.table import Table

Columns = Sequence[tuple[str, str]]  # (key, header)


def select(rows: Sequence[Mapping[str, Any]], columns: Columns) -> tuple[list[str], list[list[str]]]:
    """(headers, cells) of the dict ``rows`` in the order of ``columns``; missing keys are empty cells."""
    return [header for _, header in columns], [[_text(row.get(key, "")) for key, _ in columns] for row in rows]


def text(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table for a terminal or a log: a header, a rule, one line per row, no colour."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="", expand=False)
    for header in headers:
        table.add_column(header, no_wrap=True, overflow="ignore")
    for row in rows:
        table.add_row(*(_text(cell) for cell in row))
    out = io.StringIO()
    Console(file=out, width=100_000, color_system=None, force_terminal=False, soft_wrap=True).print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines() if line.strip())


def markdown(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (``|`` inside cells escaped, so descriptions stay in their cell)."""
    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(_text(c).replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(headers), "|" + "---|" * len(headers), *(line(row) for row in rows)])


def html(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML ``<table>`` with a ``<thead>``; every cell escaped."""
    head = "".join(f"<th>{_html.escape(_text(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_html.escape(_text(c))}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def _text(value: Any) -> str:
    return "" if value is None else str(value)
