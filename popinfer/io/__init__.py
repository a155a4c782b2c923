"""HDF5 files of popinfer: layout (CONTRACT §4), checks on read, atomic writes."""
