"""Reading the stage-one data table (CSV/TSV) and grouping its rows into objects."""

from __future__ import annotations

import hashlib
import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputDataError, UsageError


@dataclass
class Table:
    """A data table with rows grouped by object.

    Attributes
    ----------
    source : str
        File name used in messages (``"<stdin>"`` for ``-``).
    frame : pandas.DataFrame
        All cells as text, rows in file order.
    id_column : str
        Column holding the object id.
    ids : list of str
        Object ids in order of first appearance.
    order : ndarray of int
        Row indices sorted by object (stable), so object ``n`` owns rows
        ``order[starts[n]:starts[n + 1]]``.
    starts : ndarray of int, shape (n_objects + 1,)
    sha256 : str
        Digest of the raw bytes read.
    """

    source: str
    frame: pd.DataFrame
    id_column: str
    ids: list
    order: np.ndarray
    starts: np.ndarray
    sha256: str

    @property
    def n_objects(self):
        return len(self.ids)

    @property
    def columns(self):
        return list(self.frame.columns)

    def numeric_column(self, column, role=None):
        """The column as float64, rows sorted by object; errors name the row.

        Raises
        ------
        InputDataError
            For an empty, non-numeric, NaN or infinite cell.
        """
        text = self.frame[column]
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            cell = text.iloc[row]
            kind = "an empty cell" if cell.strip() == "" else f"{cell!r}"
            raise InputDataError(
                f"{self.where(row, column)}: expected a finite number"
                f"{f' ({role})' if role and role != column else ''}, found {kind}. "
                f"Fix or remove that row."
            )
        return values[self.order]

    def where(self, row, column=None):
        """Location text for a row index of the file, e.g. for messages."""
        object_id = self.frame[self.id_column].iloc[row]
        text = f"{self.source}, row {row + 1} (object {object_id!r})"
        return f"{text}, column {column!r}" if column else text

    def row_of(self, sorted_index):
        """File row index of a row given in object-sorted order."""
        return int(self.order[sorted_index])


def read_table(path, id_column=None):
    """Read a CSV/TSV table (``-`` reads CSV from stdin) and group rows by object.

    Parameters
    ----------
    path : str or Path
        ``.tsv``/``.tab`` files are tab-separated, anything else comma-separated.
    id_column : str, optional
        Object id column; default the first column.
    """
    path = str(path)
    if path == "-":
        source, raw = "<stdin>", sys.stdin.buffer.read()
    else:
        source = path
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            raise InputDataError(f"Data file {path!r} does not exist.") from None
        except IsADirectoryError:
            raise InputDataError(f"Data file {path!r} is a directory, not a CSV/TSV file.") from None
        except PermissionError:
            raise InputDataError(f"Data file {path!r} cannot be read (permission denied).") from None
    separator = "\t" if path.lower().endswith((".tsv", ".tab")) else ","
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputDataError(
            f"{source} is not UTF-8 text (byte {exc.start} cannot be decoded); "
            f"is it a CSV/TSV file? Save it as UTF-8."
        ) from None
    if "\x00" in text:
        raise InputDataError(f"{source} contains NUL bytes: it looks like a binary file, not a CSV/TSV table.")
    try:
        # header=None so that a row with more fields than the header is an error
        # rather than silently becoming an index.
        cells = pd.read_csv(io.StringIO(text), sep=separator, dtype=str, keep_default_na=False,
                            skipinitialspace=True, header=None)
    except pd.errors.EmptyDataError:
        raise InputDataError(f"{source} is empty: expected a header line and one row per measurement.") from None
    except pd.errors.ParserError as exc:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        what = (f"record {found[2]} (the header is record 1) has {found[3]} fields where the header has {found[1]}"
                if found
                else " ".join(str(exc).split()))  # pandas' message, on one line
        raise InputDataError(
            f"{source} is not a well-formed {'TSV' if separator == chr(9) else 'CSV'} table: {what}. "
            f"Every row needs as many fields as the header."
        ) from None
    # A row with fewer fields than the header reads as empty cells, reported per cell.
    frame = cells.iloc[1:].reset_index(drop=True)
    frame.columns = [str(c) for c in cells.iloc[0]]
    return table_from_frame(frame, id_column, source, hashlib.sha256(raw).hexdigest())


def table_from_frame(frame, id_column=None, source="<DataFrame>", sha256=None):
    """A :class:`Table` from a pandas DataFrame (cells are taken as text)."""
    frame = frame.astype(str) if not all(frame.dtypes == object) else frame.copy()
    frame.columns = [str(c).strip() for c in frame.columns]
    repeated = list(dict.fromkeys(c for c in frame.columns if list(frame.columns).count(c) > 1))
    if repeated:
        raise InputDataError(
            f"{source}: the header names column(s) {', '.join(map(repr, repeated))} more than once. Column "
            f"names must be unique; rename or remove the repeats."
        )
    if frame.shape[0] == 0:
        raise InputDataError(f"{source} has a header but no data rows.")
    if id_column is None:
        id_column = frame.columns[0]
    elif id_column not in frame.columns:
        raise UsageError(
            f"--id-column {id_column!r} is not a column of {source}; its columns are "
            f"{', '.join(map(repr, frame.columns))}.",
            "--id-column",
        )
    ids_text = frame[id_column].astype(str).str.strip()
    empty = np.flatnonzero(ids_text.to_numpy() == "")
    if empty.size:
        raise InputDataError(
            f"{source}, row {empty[0] + 1}, column {id_column!r}: the object id is empty."
        )
    codes, uniques = pd.factorize(ids_text, sort=False)
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    if sha256 is None:
        sha256 = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
    return Table(
        source=source,
        frame=frame,
        id_column=id_column,
        ids=[str(u) for u in uniques],
        order=order,
        starts=starts,
        sha256=sha256,
    )
