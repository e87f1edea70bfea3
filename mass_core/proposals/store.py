"""Proposal storage made for training reads: label maps by column run-length, plus a table.

One case's proposals live in one directory:

``proposals.h5``
    one group per scale ``scale_<s>`` holding that scale's label map (X, Y, Z)
    as :mod:`mass_core.proposals.rle` columns (``col_start``, ``run_end``,
    ``run_value``); proposals at one scale do not overlap, so a label map
    holds them all. Root attributes: ``format``, ``version``, ``case_id``,
    ``shape``, ``spacing`` (mm); group attributes: ``source``,
    ``scale_param``, ``n_labels``.
``proposals.parquet``
    one row per proposal: see :data:`TABLE_COLUMNS`.

A crop read loads the runs of the columns it covers (one contiguous slice
per scale) and decodes them; nothing else is decompressed. See
``docs/proposals.md``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import pandas as pd

from mass_core.atomic import atomic_path
from mass_core.proposals import rle
from mass_core.proposals.labels import label_dtype, region_stats

__all__ = [
    "FORMAT",
    "LABELS_FILE",
    "TABLE_COLUMNS",
    "TABLE_FILE",
    "CropRuns",
    "ProposalSet",
    "ProposalStore",
    "ids_by_scale",
    "write_store",
]

FORMAT = "mass-proposals"
VERSION = 1
LABELS_FILE = "proposals.h5"
TABLE_FILE = "proposals.parquet"
TABLE_COLUMNS = {
    "proposal_id": "unique id of the proposal within the case",
    "scale": "index of the label map that holds it",
    "label": "its value in that label map",
    "source": "generator of that label map (fh3d, slicewise, external:<name>, mass_h5)",
    "scale_param": "the generator's scale k in intensity x mm^3 (NaN for imported masks)",
    "voxels": "voxel count",
    "volume_mm3": "volume in mm^3",
    "x0": "bounding box, half-open, in voxels: x0 <= x < x1 (likewise y, z)",
    "x1": "",
    "y0": "",
    "y1": "",
    "z0": "",
    "z1": "",
}


@dataclass(frozen=True)
class ProposalSet:
    """The proposals of one case in memory.

    Attributes:
        case_id: the case.
        spacing: voxel spacing (X, Y, Z) in mm.
        label_maps: unsigned (S, X, Y, Z); at each scale labels ``1..n_s``, 0 = none.
        sources: per scale, the generator (see :data:`TABLE_COLUMNS`).
        scale_params: per scale, the generator's scale (NaN when none).
        table: one row per proposal, columns :data:`TABLE_COLUMNS`.
    """

    case_id: str
    spacing: tuple[float, float, float]
    label_maps: np.ndarray
    sources: tuple[str, ...]
    scale_params: tuple[float, ...]
    table: pd.DataFrame

    @classmethod
    def from_label_maps(
        cls,
        case_id: str,
        spacing: Sequence[float],
        label_maps: np.ndarray,
        sources: Sequence[str],
        scale_params: Sequence[float],
        proposal_ids: Sequence[np.ndarray] | None = None,
    ) -> ProposalSet:
        """Build the table of ``label_maps`` (S, X, Y, Z), labels ``1..n_s`` at each scale.

        ``proposal_ids`` gives, per scale, the ids of labels ``1..n_s``; by
        default ids run through scales then labels.
        """
        if label_maps.ndim != 4 or label_maps.dtype.kind != "u":
            raise ValueError(f"label_maps must be unsigned (S, X, Y, Z), got {label_maps.shape} {label_maps.dtype}")
        n_scales = label_maps.shape[0]
        if len(sources) != n_scales or len(scale_params) != n_scales:
            raise ValueError(f"sources and scale_params need one entry per scale ({n_scales})")
        voxel_mm3 = float(np.prod(spacing))
        rows = []
        next_id = 0
        for s in range(n_scales):
            stats = region_stats(label_maps[s])
            n = stats.voxels.size - 1
            if n and (stats.voxels[1:] == 0).any():
                raise ValueError(f"label_maps[{s}] must use consecutive labels 1..{n}")
            ids = np.arange(next_id, next_id + n) if proposal_ids is None else np.asarray(proposal_ids[s])
            if ids.shape != (n,):
                raise ValueError(f"proposal_ids[{s}] must have {n} entries, got {ids.shape}")
            next_id += n
            frame = pd.DataFrame(stats.bbox[1:], columns=["x0", "x1", "y0", "y1", "z0", "z1"])
            frame.insert(0, "proposal_id", ids.astype(np.int64))
            frame.insert(1, "scale", s)
            frame.insert(2, "label", np.arange(1, n + 1, dtype=np.int64))
            frame.insert(3, "source", sources[s])
            frame.insert(4, "scale_param", float(scale_params[s]))
            frame.insert(5, "voxels", stats.voxels[1:])
            frame.insert(6, "volume_mm3", stats.voxels[1:] * voxel_mm3)
            rows.append(frame)
        table = pd.concat(rows, ignore_index=True) if rows else _empty_table()
        if table["proposal_id"].duplicated().any():
            raise ValueError("proposal_ids must be unique within a case")
        table = table.astype({"scale": np.int32, **{c: np.int32 for c in ("x0", "x1", "y0", "y1", "z0", "z1")}})
        return cls(
            case_id=case_id,
            spacing=tuple(float(s) for s in spacing),
            label_maps=label_maps,
            sources=tuple(sources),
            scale_params=tuple(float(p) for p in scale_params),
            table=table.sort_values("proposal_id", ignore_index=True),
        )


def ids_by_scale(table: pd.DataFrame, n_scales: int) -> list[np.ndarray]:
    """Per scale, the int64 ids of labels ``1..n_s`` (in label order), from a proposal table."""
    ordered = table.sort_values(["scale", "label"])
    return [ordered.loc[ordered["scale"] == s, "proposal_id"].to_numpy(np.int64) for s in range(n_scales)]


def _empty_table() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=np.int64) for c in TABLE_COLUMNS})
    return frame.astype({"source": object, "scale_param": float, "volume_mm3": float})


def _mapped(dataset: h5py.Dataset) -> np.ndarray:
    """A dataset as a read-only array; mapped from the file (np.memmap) when stored contiguous and uncompressed.

    :func:`write_store` writes such datasets, so a crop's runs are a slice of
    the page cache: no HDF5 read call per crop (50-300 us each, 16 per
    training task, a fifth of the time of a 32^3 task) and no copy per worker.
    """
    offset = dataset.id.get_offset()
    if offset is None or dataset.chunks is not None or dataset.compression is not None:
        return dataset[()]  # empty, or written by another tool: read into memory
    return np.memmap(dataset.file.filename, dataset.dtype, "r", offset, dataset.shape)


def write_store(out_dir: str | os.PathLike, proposals: ProposalSet) -> Path:
    """Write ``proposals`` into ``out_dir`` (``proposals.h5`` + ``proposals.parquet``), atomically per file."""
    out_dir = Path(out_dir)
    maps = proposals.label_maps
    with atomic_path(out_dir / LABELS_FILE) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(
                format=FORMAT,
                version=VERSION,
                case_id=proposals.case_id,
                shape=maps.shape[1:],
                spacing=proposals.spacing,
            )
            for s in range(maps.shape[0]):
                n_labels = int(maps[s].max(initial=0))
                code = rle.encode(maps[s].astype(label_dtype(n_labels), copy=False))
                group = f.create_group(f"scale_{s}")
                group.attrs.update(
                    source=proposals.sources[s], scale_param=proposals.scale_params[s], n_labels=n_labels
                )
                for name in ("col_start", "run_end", "run_value"):
                    group.create_dataset(name, data=getattr(code, name))
    with atomic_path(out_dir / TABLE_FILE) as tmp:
        proposals.table.to_parquet(tmp, index=False)
    return out_dir


@dataclass(frozen=True)
class CropRuns:
    """The runs of every scale inside one crop, read once to count proposals and paint masks from.

    Attributes:
        box: the crop ``(x0, x1, y0, y1, z0, z1)``, half-open, in volume voxels.
        origin: the volume voxel at index ``[..., 0, 0, 0]`` of the arrays
            :meth:`paint` fills; the crop's corner, or an earlier voxel when
            they hold a larger (e.g. zero-padded) crop.
        columns: per scale, the runs of the crop's columns.
        bbox: per scale, int64 ``(n_s + 1, 6)``, the bounding box of each label (row 0 unused).
    """

    box: tuple[int, int, int, int, int, int]
    origin: tuple[int, int, int]
    columns: list[rle.ColumnSlice]
    bbox: list[np.ndarray]

    def counts(self) -> list[np.ndarray]:
        """Per scale, int64 ``(n_s + 1,)``: the voxels of each label inside the crop (index 0: background)."""
        out = []
        for code, boxes in zip(self.columns, self.bbox):
            counts = np.zeros(len(boxes), np.int64)
            rle.count_box(code, self.box, counts)
            out.append(counts)
        return out

    def paint(self, masks: Sequence[tuple[int, int]], out: np.ndarray) -> np.ndarray:
        """Set ``out[i]`` (bool or uint8 ``(N, cx, cy, cz)``, cleared) on the voxels of proposal ``masks[i] = (scale, label)``.

        Each mask is painted from the runs inside its own bounding box, not
        from all the crop's runs. Returns ``out``.
        """
        for i, (scale, label) in enumerate(masks):
            bbox = self.bbox[scale][label]
            inner = tuple(max(self.box[j], bbox[j]) if j % 2 == 0 else min(self.box[j], bbox[j]) for j in range(6))
            if inner[0] >= inner[1] or inner[2] >= inner[3] or inner[4] >= inner[5]:
                continue
            slot = np.full(len(self.bbox[scale]), -1, np.int64)
            slot[label] = i
            rle.paint_box(self.columns[scale], inner, slot, out, origin=self.origin)  # type: ignore[arg-type]
        return out


class ProposalStore:
    """Reader of one case's proposal directory, for training and evaluation.

    The run arrays are mapped from the file on first use (see
    :func:`_mapped`): processes share them through the page cache, and a
    store object can be handed to data-loader workers, forked or pickled.

    Example:
        >>> store = ProposalStore("results/phantom/proposals/case_000")
        >>> crop = (slice(0, 64), slice(10, 74), slice(0, 64))
        >>> runs = store.crop_runs(crop)
        >>> counts = runs.counts()  # per scale, voxels of each label in the crop
        >>> masks = runs.paint([(0, 3), (2, 1)], np.zeros((2, 64, 64, 64), bool))  # (scale, label) -> mask
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        path = self.directory / LABELS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no proposal store at {self.directory} ({LABELS_FILE} missing)")
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise ValueError(f"{path} is not a {FORMAT} file")
            self.case_id = str(f.attrs["case_id"])
            self.shape = tuple(int(v) for v in f.attrs["shape"])
            self.spacing = tuple(float(v) for v in f.attrs["spacing"])
            groups = [f[f"scale_{s}"] for s in range(len(f))]
            self.sources = tuple(str(g.attrs["source"]) for g in groups)
            self.scale_params = tuple(float(g.attrs["scale_param"]) for g in groups)
            n_labels = [int(g.attrs["n_labels"]) for g in groups]
            self._dtype = np.result_type(*[g["run_value"].dtype for g in groups]) if groups else np.dtype(np.uint8)
        self.table = pd.read_parquet(self.directory / TABLE_FILE)
        # Flat lookup over scales: label l of scale s <-> position offsets[s] + l.
        self._offsets = np.concatenate([[0], np.cumsum(np.array(n_labels, np.int64) + 1)])
        position = self._offsets[self.table["scale"].to_numpy()] + self.table["label"].to_numpy()
        self._bbox = np.zeros((int(self._offsets[-1]), 6), np.int64)
        self._bbox[position] = self.table[["x0", "x1", "y0", "y1", "z0", "z1"]].to_numpy()
        self._runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    @property
    def n_scales(self) -> int:
        return len(self.sources)

    def _scales(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        # Per scale: col_start, run_end, run_value.
        if not self._runs:
            with h5py.File(self.directory / LABELS_FILE, "r") as f:
                groups = [f[f"scale_{s}"] for s in range(self.n_scales)]
                self._runs = [(_mapped(g["col_start"]), _mapped(g["run_end"]), _mapped(g["run_value"])) for g in groups]
        return self._runs

    def close(self) -> None:
        """Drop the mapped run arrays (mapped again on the next read)."""
        self._runs = []

    def __getstate__(self) -> dict:
        # A pickled store (a spawned worker) maps the file itself rather than carrying copies of the runs.
        return {**self.__dict__, "_runs": []}

    def _box(self, slices: Sequence[slice]) -> tuple[int, int, int, int, int, int]:
        if len(slices) != 3:
            raise ValueError(f"slices must be three slices (X, Y, Z), got {slices!r}")
        box = []
        for axis, (sl, n) in enumerate(zip(slices, self.shape)):
            # No clamping: a crop that leaves the volume is the caller's bug.
            start = 0 if sl.start is None else int(sl.start)
            stop = n if sl.stop is None else int(sl.stop)
            if sl.step not in (None, 1) or not 0 <= start < stop <= n:
                raise ValueError(f"slices[{axis}] must be a non-empty slice with step 1 inside 0..{n}, got {sl}")
            box += [start, stop]
        return tuple(box)  # type: ignore[return-value]

    def _columns(self, box: tuple[int, int, int, int, int, int]) -> list[rle.ColumnSlice]:
        # The crop's columns are one contiguous range of each scale's runs.
        ny = self.shape[1]
        col_lo, col_hi = box[0] * ny + box[2], (box[1] - 1) * ny + box[3]
        columns = []
        for col_start, run_end, run_value in self._scales():
            run_lo, run_hi = int(col_start[col_lo]), int(col_start[col_hi])
            columns.append(
                rle.ColumnSlice(col_start, run_end[run_lo:run_hi], run_value[run_lo:run_hi], ny, 0, run_lo)
            )
        return columns

    def read_crop(self, slices: Sequence[slice]) -> np.ndarray:
        """Label maps of the crop ``slices`` (X, Y, Z): unsigned (S, cx, cy, cz)."""
        box = self._box(slices)
        out = np.empty((self.n_scales, box[1] - box[0], box[3] - box[2], box[5] - box[4]), self._dtype)
        for s, code in enumerate(self._columns(box)):
            rle.decode_box(code, box, out[s])
        return out

    def label_maps(self) -> np.ndarray:
        """All label maps: unsigned (S, X, Y, Z)."""
        return self.read_crop([slice(None)] * 3)

    def crop_runs(self, slices: Sequence[slice], origin: Sequence[int] | None = None) -> CropRuns:
        """The runs of every scale inside the crop ``slices`` (X, Y, Z), to count and paint proposals from.

        Args:
            slices: the crop, inside the volume.
            origin: the volume voxel at index ``[..., 0, 0, 0]`` of the masks
                :meth:`CropRuns.paint` fills (default: the crop's corner).
        """
        box = self._box(slices)
        corner = (box[0], box[2], box[4]) if origin is None else tuple(int(v) for v in origin)
        bbox = [self._bbox[self._offsets[s] : self._offsets[s + 1]] for s in range(self.n_scales)]
        return CropRuns(box, corner, self._columns(box), bbox)  # type: ignore[arg-type]

    def masks(self, ids: Sequence[int]) -> np.ndarray:
        """Whole-volume binary masks of ``ids``: bool (N, X, Y, Z), in the order given."""
        ids = np.asarray(ids, np.int64)
        if np.unique(ids).size != ids.size:
            raise ValueError(f"ids must be unique, got {ids}")
        rows = self.table.set_index("proposal_id").reindex(ids)
        if rows["scale"].isna().any():
            raise ValueError(f"ids not in the store of case {self.case_id!r}: {ids[rows['scale'].isna().to_numpy()]}")
        masks = list(zip(rows["scale"].to_numpy(int).tolist(), rows["label"].to_numpy(int).tolist()))
        return self.crop_runs([slice(None)] * 3).paint(masks, np.zeros((ids.size, *self.shape), bool))

    def to_proposal_set(self) -> ProposalSet:
        """Everything in memory, e.g. to add imported masks and write it back."""
        return ProposalSet(
            case_id=self.case_id,
            spacing=self.spacing,
            label_maps=self.label_maps(),
            sources=self.sources,
            scale_params=self.scale_params,
            table=self.table.copy(),
        )

    def __repr__(self) -> str:
        return (
            f"ProposalStore({str(self.directory)!r}, case={self.case_id!r}, "
            f"scales={self.n_scales}, proposals={len(self.table)})"
        )
