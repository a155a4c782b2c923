"""Ranges of objects sized by an element budget: how every pass over (N, ...) arrays
keeps its temporaries bounded whatever N."""

BLOCK_ELEMENTS = 2**18


def object_blocks(n_objects, per_object, elements=BLOCK_ELEMENTS, start=0):
    """[(lo, hi), ...] covering objects ``start:n_objects``, each about ``elements`` values
    when an object holds ``per_object`` of them (at least one object per range)."""
    step = max(1, int(elements) // max(1, int(per_object)))
    return [(lo, min(lo + step, n_objects)) for lo in range(start, n_objects, step)]
