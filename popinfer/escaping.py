"""Text made safe to show: control characters escaped for terminals, formulas
defused for spreadsheets.

Object ids, parameter names and provenance come from users' files. Printed raw, an
id holding an escape sequence can rewrite the terminal (move the cursor, hide text,
set the window title); exported raw, an id starting with ``=`` becomes a formula
when the CSV is opened in a spreadsheet.
"""

from __future__ import annotations

import re


# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides
# and isolates (which reorder what is shown: "Trojan Source").
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _escape(match):
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text):
    """``text`` with every control and bidirectional-override character written as
    a Python escape (``\\x1b``, ``\\u202e``); tabs and newlines are kept."""
    return _UNPRINTABLE.sub(_escape, str(text))


def formula_safe(frame):
    """A copy of ``frame`` whose text cells cannot be read as spreadsheet formulas:
    a cell starting with ``= + - @``, a tab or a carriage return gets a leading ``'``
    (the OWASP recommendation). Numeric columns are left as they are."""
    import pandas as pd

    frame = frame.copy()
    for column in frame.columns:
        if pd.api.types.is_object_dtype(frame[column]) or pd.api.types.is_string_dtype(frame[column]):
            frame[column] = frame[column].map(
                lambda value: f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value)
    return frame
