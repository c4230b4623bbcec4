"""Terminal tables that fit the terminal: headline columns always whole, the others only where they fit.

Rich squeezes every column of a table wider than the terminal, so at 80 columns a file name became
"edge_…". A :class:`FittedTable` picks its columns when it is printed, from the width it is given: the
``keep`` columns always, then the others in priority order while the table still fits without wrapping
or cutting a cell. Nothing is lost: the folded columns stay in the command's ``--json``/``--csv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class Column:
    """One column: its header, how a row becomes its cell (plain text, or a styled rich Text)."""

    header: str
    cell: Callable[[int, dict], str | Text]  # (row index, row) -> cell
    justify: str = "left"
    keep: bool = False  # a headline column: shown at any width


class FittedTable:
    """A rich renderable: the ``keep`` columns, plus the others (most useful first in ``priority``, a list
    of headers; by default the declared order) wherever the table still fits the width it is printed at.
    Columns keep their declared order on screen. ``footer`` lines (rich Text) follow the table."""

    def __init__(self, columns: Sequence[Column], rows: Sequence[dict], title: str | None = None,
                 priority: Sequence[str] = (), footer: Sequence[Text] = ()):
        headers = [c.header for c in columns]
        unknown = set(priority) - set(headers)
        if unknown:
            raise ValueError(f"priority names unknown columns: {sorted(unknown)}")
        self.columns, self.rows, self.title, self.footer = list(columns), list(rows), title, list(footer)
        optional = [c for c in columns if not c.keep]
        self.priority = ([c for h in priority for c in optional if c.header == h]
                         + [c for c in optional if c.header not in priority])
        self._cells = {c.header: [_text(c.cell(i, r)) for i, r in enumerate(self.rows)] for c in columns}

    def table(self, chosen: set[str] | None = None) -> Table:
        """The rich Table of the chosen column headers (all columns when None)."""
        t = Table(title=self.title)
        shown = [c for c in self.columns if chosen is None or c.header in chosen]
        for c in shown:
            t.add_column(c.header, justify=c.justify, no_wrap=True)
        for i in range(len(self.rows)):
            t.add_row(*(self._cells[c.header][i] for c in shown))
        return t

    def fit(self, console, options) -> Table:
        """The table with every kept column and each other column, by priority, that still fits."""
        chosen = {c.header for c in self.columns if c.keep}
        unbounded = options.update_width(1 << 20)  # a table's measure is capped at the width it is given
        for column in self.priority:
            wider = chosen | {column.header}
            if Measurement.get(console, unbounded, self.table(wider)).maximum <= options.max_width:
                chosen = wider
        return self.table(chosen)

    def __rich_console__(self, console, options):
        yield self.fit(console, options)
        yield from self.footer


def _text(value: str | Text) -> Text:
    """Cells are never parsed as markup: a file named ``model[1].tflite`` stays as it is."""
    return value if isinstance(value, Text) else Text(str(value))
