"""CSV that a spreadsheet opens as data: the one writer every CSV output of the
agent goes through (the fleet report's files, ``agent bench --csv``).

"CSV injection" (OWASP): Excel, LibreOffice and Google Sheets execute a cell
that starts with ``=``, ``+``, ``-`` or ``@`` (and, after trimming, with a tab
or a carriage return) as a formula — ``=HYPERLINK(...)`` or ``=cmd|...`` in a
GPU name, an instance type or a version string of a result document would run
on the machine of whoever opens ``results.csv``. Such a cell is written with a
leading single quote (shown as text, never evaluated) and always quoted.

Only *text* is escaped. Numbers are data: an int or a float (``-5.2`` in
comparison.csv) is written as a number, and text that our own code formatted
from a number (``number(x, ".2f")``) is written as is — escaping it would turn
a negative change into text in every spreadsheet."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable
from typing import IO, Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NEEDS_QUOTES = re.compile(r'[",\r\n]')


class number(str):  # noqa: N801  (used like a function: number(x, ".2f"))
    """Text formatted by our code from a number: never escaped."""

    __slots__ = ()

    def __new__(cls, value: float | int, spec: str = "") -> number:
        return super().__new__(cls, format(value, spec))


def _cell_function(float_format: str, escaped: list | None) -> Callable[[Any], Any]:
    """The one rule, as a closure (it runs once per cell of a 372,000-row
    report); ``escaped`` (when given) gets an entry per escaped cell."""

    def cell(value: Any) -> Any:
        if value is None:
            return ""
        cls = value.__class__
        if cls is str:  # text from a document (exactly str: number() is ours, not escaped)
            if value.startswith(FORMULA_START):
                if escaped is not None:
                    escaped.append(value)
                return "'" + value
            return value
        if cls is float:  # a number stays a number, whatever its sign
            return format(value, float_format)
        return value  # int, bool, datetime, number(): written as str() gives them

    return cell


safe_cell = _cell_function(".6g", None)
safe_cell.__doc__ = """The cell as written: ``None`` → empty, floats formatted (``.6g``), text
that a spreadsheet would execute → ``'`` + text; everything else unchanged."""


def _quoted(cell: Any) -> str:
    text = str(cell)
    if (cell.__class__ is str and text[:1] == "'") or _NEEDS_QUOTES.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


class Writer:
    """``csv.writer`` semantics (``writerow``/``writerows``, ``\\n`` line ends)
    with every cell passed through the rule of :func:`safe_cell`. Rows without
    an escaped cell (all of them, normally) go through the C writer; a row with
    one is joined here so that the escaped cell is also quoted, as OWASP
    recommends (the other cells of that row are quoted only where CSV needs it)."""

    def __init__(self, f: IO[str], float_format: str = ".6g") -> None:
        self._f = f
        self._csv = csv.writer(f, lineterminator="\n")
        self._escaped: list[str] = []
        self._cell = _cell_function(float_format, self._escaped)

    def writerow(self, row: Iterable[Any]) -> None:
        self.writerows((row,))

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        cell, write, escaped = self._cell, self._csv.writerow, self._escaped
        for row in rows:
            cells = [cell(v) for v in row]
            if escaped:
                escaped.clear()
                self._f.write(",".join(map(_quoted, cells)) + "\n")
            else:
                write(cells)


def writer(f: IO[str], float_format: str = ".6g") -> Writer:
    return Writer(f, float_format)
