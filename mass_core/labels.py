"""Values of a standardized label map: background, class ids and the ignore value.

A dataset may mark voxels as "unlabeled / do not score" with a value of its
own (config ``datasets.<name>.ignore_label``, often 255). The standardize
stage stores every such voxel as :data:`IGNORE_LABEL`, whatever the
dataset's value was, so that every consumer of ``label.npy`` recognises them
from the array alone: they are no class, enter no loss and no metric.
"""

from __future__ import annotations

import numpy as np

__all__ = ["IGNORE_LABEL", "IGNORE_LOOKALIKES", "foreground_classes", "ignored"]

# The largest uint16, one above any class id a label map may hold: stored
# labels are uint8 or uint16, and a map with ignored voxels is uint16.
IGNORE_LABEL = int(np.iinfo(np.uint16).max)
# Raw values that mean "ignore" by convention (uint8's and uint16's largest);
# undeclared, they are refused rather than trained as classes.
IGNORE_LOOKALIKES = (int(np.iinfo(np.uint8).max), IGNORE_LABEL)


def ignored(label: np.ndarray) -> np.ndarray:
    """Bool mask of the voxels of a standardized label map that are left out of losses and metrics."""
    return np.asarray(label) == IGNORE_LABEL


def foreground_classes(label: np.ndarray) -> list[int]:
    """Class ids present in a standardized label map, sorted; background 0 and ignored voxels excluded.

    Example:
        >>> foreground_classes(np.array([0, 2, 1, IGNORE_LABEL, 2]))
        [1, 2]
    """
    return [int(v) for v in np.unique(label) if 0 < v < IGNORE_LABEL]
