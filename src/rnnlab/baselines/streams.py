"""Token streams as the baselines take them: one stream, or several that no n-gram or HMM path crosses."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def is_single_stream(streams) -> bool:
    """One stream of token ids (a 1-D array or tensor, or a flat list) rather than a list of streams."""
    ndim = getattr(streams, "ndim", None)
    if ndim is not None:
        return ndim == 1
    return not (isinstance(streams, Sequence) and len(streams) and not np.isscalar(streams[0]))
