"""Column run-length code for integer label maps (X, Y, Z), decodable by crop.

Each (x, y) column is stored as runs of equal labels along Z. A column index
(``col_start``) says where each column's runs begin, so a crop decodes only
the runs of the columns it covers, and reading the runs of columns
``x0..x1`` is one contiguous slice. Label maps are piecewise constant, so
runs are long: the code is several times smaller than the raw map, and
decoding is a memory copy rather than a decompression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

__all__ = ["ColumnSlice", "RunLengthColumns", "count_box", "decode_box", "encode", "paint_box"]


@dataclass(frozen=True)
class RunLengthColumns:
    """A label map (X, Y, Z) as runs along Z.

    Attributes:
        shape: (X, Y, Z) of the map.
        col_start: int64 (X * Y + 1,); the runs of column ``c = x * Y + y``
            are ``col_start[c]:col_start[c + 1]``.
        run_end: uint16 or uint32 (R,), exclusive Z end of each run.
        run_value: unsigned (R,), the label of each run.
    """

    shape: tuple[int, int, int]
    col_start: np.ndarray
    run_end: np.ndarray
    run_value: np.ndarray


@numba.njit(cache=True, nogil=True)
def _count_runs(labels: np.ndarray, col_start: np.ndarray) -> None:
    nx, ny, nz = labels.shape
    total = 0
    for x in range(nx):
        for y in range(ny):
            col_start[x * ny + y] = total
            total += 1
            for z in range(1, nz):
                if labels[x, y, z] != labels[x, y, z - 1]:
                    total += 1
    col_start[nx * ny] = total


@numba.njit(cache=True, nogil=True)
def _fill_runs(labels: np.ndarray, run_end: np.ndarray, run_value: np.ndarray) -> None:
    nx, ny, nz = labels.shape
    r = 0
    for x in range(nx):
        for y in range(ny):
            for z in range(1, nz + 1):
                if z == nz or labels[x, y, z] != labels[x, y, z - 1]:
                    run_end[r] = z
                    run_value[r] = labels[x, y, z - 1]
                    r += 1


def encode(labels: np.ndarray) -> RunLengthColumns:
    """Run-length code ``labels`` (X, Y, Z), unsigned integers, along Z."""
    if labels.ndim != 3 or labels.dtype.kind != "u" or min(labels.shape) == 0:
        raise ValueError(f"labels must be a non-empty 3D unsigned array, got {labels.shape} {labels.dtype}")
    nx, ny, nz = labels.shape
    col_start = np.empty(nx * ny + 1, np.int64)
    _count_runs(labels, col_start)
    run_end = np.empty(int(col_start[-1]), np.uint16 if nz < 2**16 else np.uint32)
    run_value = np.empty(int(col_start[-1]), labels.dtype)
    _fill_runs(labels, run_end, run_value)
    return RunLengthColumns(shape=labels.shape, col_start=col_start, run_end=run_end, run_value=run_value)


@dataclass(frozen=True)
class ColumnSlice:
    """The runs of a range of columns, as a reader loads them.

    Attributes:
        col_start: int64, ``RunLengthColumns.col_start[col_base:col_end + 1]``.
        run_end, run_value: the runs from ``run_base`` to the range's last run.
        ny: Y size of the map.
        col_base, run_base: the range's first column and run.
    """

    col_start: np.ndarray
    run_end: np.ndarray
    run_value: np.ndarray
    ny: int
    col_base: int = 0
    run_base: int = 0

    @classmethod
    def whole(cls, code: RunLengthColumns) -> ColumnSlice:
        return cls(code.col_start, code.run_end, code.run_value, code.shape[1])


# The three kernels below walk the same runs (those of the box's columns,
# clipped to its Z range) and differ in what they do with each run.


@numba.njit(cache=True, nogil=True, inline="always")
def _first_run(
    col_start: np.ndarray, run_end: np.ndarray, run_base: int, col_base: int, ny: int, x: int, y: int, z0: int
) -> int:
    r = col_start[x * ny + y - col_base] - run_base
    while run_end[r] <= z0:
        r += 1
    return r


@numba.njit(cache=True, nogil=True)
def _decode(
    col_start: np.ndarray,
    run_end: np.ndarray,
    run_value: np.ndarray,
    run_base: int,
    col_base: int,
    ny: int,
    box: np.ndarray,
    out: np.ndarray,
) -> None:
    x0, x1, y0, y1, z0, z1 = box[0], box[1], box[2], box[3], box[4], box[5]
    for x in range(x0, x1):
        for y in range(y0, y1):
            r = _first_run(col_start, run_end, run_base, col_base, ny, x, y, z0)
            z = z0
            while z < z1:
                end = min(np.int64(run_end[r]), z1)
                out[x - x0, y - y0, z - z0 : end - z0] = run_value[r]
                z = end
                r += 1


@numba.njit(cache=True, nogil=True)
def _count(
    col_start: np.ndarray,
    run_end: np.ndarray,
    run_value: np.ndarray,
    run_base: int,
    col_base: int,
    ny: int,
    box: np.ndarray,
    offset: int,
    counts: np.ndarray,
) -> None:
    x0, x1, y0, y1, z0, z1 = box[0], box[1], box[2], box[3], box[4], box[5]
    for x in range(x0, x1):
        for y in range(y0, y1):
            r = _first_run(col_start, run_end, run_base, col_base, ny, x, y, z0)
            z = z0
            while z < z1:
                end = min(np.int64(run_end[r]), z1)
                counts[offset + np.int64(run_value[r])] += end - z
                z = end
                r += 1


@numba.njit(cache=True, nogil=True)
def _paint(
    col_start: np.ndarray,
    run_end: np.ndarray,
    run_value: np.ndarray,
    run_base: int,
    col_base: int,
    ny: int,
    box: np.ndarray,
    origin: np.ndarray,
    slot: np.ndarray,
    masks: np.ndarray,
) -> None:
    x0, x1, y0, y1, z0, z1 = box[0], box[1], box[2], box[3], box[4], box[5]
    for x in range(x0, x1):
        for y in range(y0, y1):
            r = _first_run(col_start, run_end, run_base, col_base, ny, x, y, z0)
            z = z0
            while z < z1:
                end = min(np.int64(run_end[r]), z1)
                m = slot[run_value[r]]
                if m >= 0:
                    masks[m, x - origin[0], y - origin[1], z - origin[2] : end - origin[2]] = True
                z = end
                r += 1


def _args(code: ColumnSlice, box: tuple[int, ...]) -> tuple:
    if box[1] <= box[0] or box[3] <= box[2] or box[5] <= box[4]:
        raise ValueError(f"box must be non-empty (x0, x1, y0, y1, z0, z1), got {box}")
    box_array = np.asarray(box, np.int64)
    return (code.col_start, code.run_end, code.run_value, code.run_base, code.col_base, code.ny, box_array)


def decode_box(code: ColumnSlice, box: tuple[int, int, int, int, int, int], out: np.ndarray) -> np.ndarray:
    """Decode the crop ``box = (x0, x1, y0, y1, z0, z1)`` (half-open, voxels) into ``out`` (cx, cy, cz).

    ``code`` must cover the box's columns and the box must lie inside the map.
    """
    _decode(*_args(code, box), out)
    return out


def count_box(code: ColumnSlice, box: tuple[int, int, int, int, int, int], counts: np.ndarray, offset: int = 0) -> None:
    """Add the voxel count of every label inside ``box`` to ``counts[offset + label]`` (int64)."""
    _count(*_args(code, box), offset, counts)


def paint_box(
    code: ColumnSlice,
    box: tuple[int, int, int, int, int, int],
    slot: np.ndarray,
    masks: np.ndarray,
    origin: tuple[int, int, int] | None = None,
) -> None:
    """Set ``masks[slot[label]]`` (bool (N, cx, cy, cz)) on the voxels of ``box`` with that label.

    ``slot`` is int64 over labels; -1 leaves a label out. ``masks`` starts at
    voxel ``origin`` of the map (default: the box's corner), so that a box
    inside a crop paints into the crop's masks.
    """
    corner = (box[0], box[2], box[4]) if origin is None else origin
    _paint(*_args(code, box), np.asarray(corner, np.int64), slot, masks)
