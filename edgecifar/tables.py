"""Terminal tables that fit the terminal: headline columns always whole, the others only where they fit.

Rich squeezes every column of a table wider than the terminal, so at 80 columns a file name became
"edge_…". A :class:`FittedTable` picks its columns when it is printed, from the width it is given: the
``keep`` columns always, then the others in priority order while the table still fits without wrapping
or cutting a cell. Nothing is lost: the folded columns stay in the command's ``--json``/``--csv``. A column's
``note`` (what its figures mean) is printed below the table only when the column is shown.

Piped or captured output (a log, CI, a test) has no terminal to fit: :func:`output_console` gives it a width
no table folds at, unless ``COLUMNS`` asks for one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

from rich.console import Console
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
    note: str = ""      # what the figures mean, said below the table when the column is shown


class FittedTable:
    """A rich renderable: the ``keep`` columns, plus the others (most useful first in ``priority``, a list
    of headers; by default the declared order) wherever the table still fits the width it is printed at.
    Columns keep their declared order on screen. The notes of the shown columns, then the ``footer`` lines
    (rich Text), follow the table."""

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

    def choose(self, console, options) -> set[str]:
        """The headers of every kept column and of each other column, by priority, that still fits."""
        chosen = {c.header for c in self.columns if c.keep}
        unbounded = options.update_width(1 << 20)  # a table's measure is capped at the width it is given
        for column in self.priority:
            wider = chosen | {column.header}
            if Measurement.get(console, unbounded, self.table(wider)).maximum <= options.max_width:
                chosen = wider
        return chosen

    def fit(self, console, options) -> Table:
        """The table of the columns :meth:`choose` picks."""
        return self.table(self.choose(console, options))

    def notes(self, chosen: set[str]) -> list[Text]:
        """One line per distinct note of the shown columns, naming them: a footer never explains a column
        that the width folded away."""
        by_note: dict[str, list[str]] = {}
        for c in self.columns:
            if c.note and c.header in chosen:
                by_note.setdefault(c.note, []).append(c.header)
        return [Text(f"{', '.join(headers)}: {note}") for note, headers in by_note.items()]

    def __rich_console__(self, console, options):
        chosen = self.choose(console, options)
        yield self.table(chosen)
        yield from self.notes(chosen)
        yield from self.footer


#: The width of output that is not a terminal: every table whole (rich would take the width of whatever terminal
#: the process was started from, or 80 columns, and fold the table of a log or a test by it).
UNFOLDED_WIDTH = 1000


def output_console(stderr: bool = False) -> Console:
    """The console tables are printed on: on a terminal, its width; ``COLUMNS`` when set (the caller asks for a
    width); else, piped or captured, :data:`UNFOLDED_WIDTH`, whatever terminal the process was started from."""
    console = Console(stderr=stderr)
    if _isatty(console.file) or os.environ.get("COLUMNS", "").isdigit():
        return console
    return Console(stderr=stderr, width=UNFOLDED_WIDTH)


def _isatty(stream) -> bool:
    """Whether ``stream`` is a terminal (not rich's is_terminal, which FORCE_COLOR turns on for a pipe)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _text(value: str | Text) -> Text:
    """Cells are never parsed as markup: a file named ``model[1].tflite`` stays as it is."""
    return value if isinstance(value, Text) else Text(str(value))
