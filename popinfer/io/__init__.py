"""HDF5 files of popinfer: layout (README, "HDF5 layout"), checks on read, atomic writes."""

import io
import sys

from ..errors import FileFormatError
from .hdf5 import format_kind, open_popinfer_file


def read_file(path):
    """``(kind, content)`` of a samples or population file (``-`` reads stdin).

    ``content`` is a :class:`~popinfer.io.samples.Samples` or a
    :class:`~popinfer.io.population.PopulationResult`.
    """
    from .population import read_population
    from .samples import read_samples

    source = io.BytesIO(sys.stdin.buffer.read()) if str(path) == "-" else path
    with open_popinfer_file(source) as handle:
        kind = format_kind(handle)
    if isinstance(source, io.BytesIO):
        source.seek(0)
    if kind == "population":
        return kind, read_population(source)
    if kind == "samples":
        return kind, read_samples(source)
    raise FileFormatError(f"{path} is a popinfer {kind} file; expected a samples or population file.")
