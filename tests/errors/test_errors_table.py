"""docs/errors.md: every row's bad input gives exactly the error the table shows.

Each row's ID names a trigger in `cases.py`; its "What you get" cell is matched against what the
trigger returns, `…` standing for a varying part. Rows without a trigger and triggers without a
row both fail, so the table and the code cannot drift apart.
"""

import os
import re

import pytest
from cases import CASES

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                   "docs", "errors.md")
KERAS_FRAME = re.compile(r"Exception encountered when calling .*?\n\n(?:\x1b\[1m)?(.*?)(?:\x1b\[0m)?\n",
                         re.DOTALL)


def table_rows():
    rows = {}
    with open(DOC) as f:
        for line in f:
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if len(cells) == 4 and re.fullmatch(r"[A-Z]\d+", cells[0]):
                rows[cells[0]] = cells[3].strip("`").strip()
    return rows


ROWS = table_rows()


def _pattern(text):
    return re.compile(".*?".join(re.escape(part) for part in text.split("…")), re.DOTALL)


def _unwrap(message):
    """The message inside Keras' "Exception encountered when calling X.call()" frame."""
    found = KERAS_FRAME.search(message)
    if not found:
        return message
    return message.split(":", 1)[0] + ": " + found.group(1).strip()


def test_the_table_has_at_least_30_rows_and_a_trigger_for_each():
    assert len(ROWS) >= 30
    assert sorted(ROWS) == sorted(CASES)


@pytest.mark.parametrize("row_id", sorted(ROWS))
def test_row(row_id, tmp_path, capsys):
    got = _unwrap(CASES[row_id](tmp_path, capsys))
    assert "\n" not in got, f"{row_id}: not one line: {got!r}"
    assert _pattern(ROWS[row_id]).fullmatch(got), f"{row_id}:\n doc: {ROWS[row_id]}\n got: {got}"
