"""MASS training tasks: two overlapping crops of one case and K masks drawn from its proposals.

A task is a pure function of ``(seed, step, index)``: the sampler keeps no
iterator state, so a resumed run, a run with more data-loader workers or a run
split over several GPUs draws exactly the same tasks.

Construction of one task (see ``docs/pretraining.md``):

1. Pick a case and an anchor voxel uniformly in it.
2. Place the reference crop uniformly among the positions that contain the
   anchor (inside the volume when it is large enough); shift it by up to
   ``max_shift`` of the crop size per axis for the query crop, which must
   still contain the anchor. ``max_shift = 0.25`` gives ~2/3 volume overlap
   on average. With probability ``far_query`` the query crop is instead
   placed uniformly anywhere in the volume: its targets are still exact
   (the same proposal ids in the same label maps) and mostly empty, which
   teaches the model to answer "not here", as it must in every sliding window
   of an evaluation volume that misses the structure.
3. Candidates are the proposals (label ``> 0`` of every scale's label map)
   with at least ``min_mask_voxels`` voxels in the reference crop. Draw up to
   ``K - 1`` of them without replacement, each scale equally likely (so that
   the many small fine-scale segments do not crowd out whole organs), and add
   the all-ones mask. If no proposal qualifies, retry with a new anchor (up
   to ``max_attempts``); unfilled slots are padding with ``valid = False``.
4. The query targets are the same proposal ids binarised in the query crop.
   A target may be empty (the structure lies outside the query crop or is
   moved out by the query's affine): it stays a valid task whose answer is
   "nothing"; :func:`~mass_core.pretrain.losses.mass_loss` trains it with BCE
   only.
5. Weak intensity augmentation on the reference, strong on the query, both
   here in numpy; the query's affine is only drawn here and applied on the
   device (:func:`~mass_core.pretrain.augment.warp_query`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from mass_core.arrays import crop_padded
from mass_core.config_section import from_section
from mass_core.pretrain.augment import (
    STRONG_INTENSITY,
    WEAK_INTENSITY,
    IntensityAugConfig,
    SpatialAugConfig,
    augment_intensity,
    random_affine,
)
from mass_core.pretrain.case_draw import CaseDraw
from mass_core.proposals.store import CropRuns, ProposalStore

__all__ = ["CaseArrays", "CaseSource", "NpyCase", "SamplerConfig", "TaskSample", "TaskSampler", "read_crop", "task_rng"]


@dataclass(frozen=True)
class CaseArrays:
    """One case's arrays, on the same (X, Y, Z) grid.

    Attributes:
        image: float32 ``(X, Y, Z)`` z-scored image; anything with ``shape`` that
            supports ``[a:b, c:d, e:f]`` slicing (``np.ndarray``, ``np.memmap``,
            ``h5py.Dataset``).
        proposals: a :class:`~mass_core.proposals.store.ProposalStore` (read
            by runs: its crops are never decoded to label maps), or integer
            label maps ``(S, X, Y, Z)``, one per proposal scale, with ``shape``
            and ``[:, a:b, c:d, e:f]`` slicing; label 0 is background, every
            positive label a proposal.
        case_id: name, for messages.
    """

    image: Any
    proposals: Any
    case_id: str = ""

    def open(self) -> CaseArrays:
        """Already open: in-memory cases are their own source."""
        return self


class CaseSource(Protocol):
    """Anything that opens a case's arrays on demand.

    Opening per sample (cheap for mmap'd ``.npy``) instead of holding open
    handles keeps sources picklable and safe to use in forked data-loader
    workers (an h5py handle is neither).
    """

    def open(self) -> CaseArrays: ...


@dataclass(frozen=True)
class NpyCase:
    """A case stored as uncompressed ``.npy`` files, opened through ``mmap``.

    Attributes:
        case_id: name of the case.
        image: path of the float32 ``(X, Y, Z)`` image.
        proposals: path of the integer ``(S, X, Y, Z)`` label maps.
    """

    case_id: str
    image: Path
    proposals: Path

    def open(self) -> CaseArrays:
        image = np.load(self.image, mmap_mode="r")
        maps = np.load(self.proposals, mmap_mode="r")
        if maps.ndim != 4 or maps.shape[1:] != image.shape:
            raise ValueError(f"case {self.case_id!r}: proposals {self.proposals} must be (S, {image.shape}), got {maps.shape}")
        return CaseArrays(image=image, proposals=maps, case_id=self.case_id)


def _as_size(value: int | Sequence[int]) -> tuple[int, int, int]:
    size = (int(value),) * 3 if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"crop_size must be a positive int or three of them, got {value!r}")
    return size  # type: ignore[return-value]


@dataclass(frozen=True)
class SamplerConfig:
    """How tasks are drawn (config key ``pretrain.mass.sampler``).

    Args:
        crop_size: ``(X, Y, Z)`` of both crops in voxels, or one int for a cube
            (the paper: 128 at 1.5 mm); must suit the model's downsampling factor.
        num_masks: K, masks per task including the all-ones mask (the paper: 13).
        min_mask_voxels: least voxels a proposal needs inside the reference crop.
        max_shift: largest query offset per axis as a fraction of the crop size.
        far_query: probability that the query crop is placed anywhere in the
            volume rather than around the anchor.
        full_mask: put the all-ones mask in slot 0, as the paper does.
        max_attempts: anchors tried to find a reference crop with proposals.
        reference_intensity: weak augmentation of the reference image.
        query_intensity: strong augmentation of the query image.
        query_spatial: affine drawn for the query (applied on the device).
    """

    crop_size: tuple[int, int, int] = (32, 32, 32)
    num_masks: int = 5
    min_mask_voxels: int = 32
    max_shift: float = 0.25
    far_query: float = 0.0
    full_mask: bool = True
    max_attempts: int = 8
    reference_intensity: IntensityAugConfig = WEAK_INTENSITY
    query_intensity: IntensityAugConfig = STRONG_INTENSITY
    query_spatial: SpatialAugConfig = field(default_factory=SpatialAugConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop_size", _as_size(self.crop_size))
        if self.num_masks < 1 + int(self.full_mask):
            raise ValueError(f"num_masks must be >= {1 + int(self.full_mask)} (one proposal plus the all-ones mask), got {self.num_masks}")
        if self.min_mask_voxels < 1:
            raise ValueError(f"min_mask_voxels must be >= 1, got {self.min_mask_voxels}")
        if not 0 <= self.max_shift < 1:
            raise ValueError(f"max_shift must be in [0, 1), got {self.max_shift}")
        if not 0 <= self.far_query <= 1:
            raise ValueError(f"far_query must be in [0, 1], got {self.far_query}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SamplerConfig:
        """Build from the config section ``pretrain.mass.sampler`` (nested mappings for the augmentation parts)."""
        return from_section(cls, values, "pretrain.mass.sampler")


@dataclass
class TaskSample:
    """One in-context task, as numpy arrays ready for ``default_collate``.

    Attributes:
        reference_image: ``(1, X, Y, Z)`` float32, weakly augmented.
        reference_masks: ``(K, X, Y, Z)`` uint8.
        query_image: ``(1, X, Y, Z)`` float32, intensity-augmented, not yet warped.
        query_masks: ``(K, X, Y, Z)`` uint8 targets, not yet warped.
        query_theta: ``(3, 4)`` float32 affine for :func:`~mass_core.pretrain.augment.warp_query`.
        valid: ``(K,)`` bool; False marks padding slots.
        mask_ids: ``(K, 2)`` int64 ``(scale, label)``; ``(-1, -1)`` for the
            all-ones mask, ``(-1, 0)`` for padding.
        case_index: index of the case in the sampler's list.
        anchor: ``(3,)`` int64 voxel in the reference crop (and in the query crop unless it is a far query), in volume coordinates.
        reference_start: ``(3,)`` int64 first voxel of the reference crop (may be
            negative when the volume is smaller than the crop: zero padding).
        query_start: ``(3,)`` int64 first voxel of the query crop.
    """

    reference_image: np.ndarray
    reference_masks: np.ndarray
    query_image: np.ndarray
    query_masks: np.ndarray
    query_theta: np.ndarray
    valid: np.ndarray
    mask_ids: np.ndarray
    case_index: int
    anchor: np.ndarray
    reference_start: np.ndarray
    query_start: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """Field name -> value, without copying the arrays."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def task_rng(seed: int, step: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of global step ``step``: the only source of task randomness."""
    if min(seed, step, index) < 0:
        raise ValueError(f"seed, step and index must be >= 0, got {seed}, {step}, {index}")
    return np.random.default_rng([seed, step, index])


def read_crop(array: Any, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Copy a box of the last three axes of ``array``, zero-padded where the box leaves it.

    Args:
        array: ``(..., X, Y, Z)`` array-like with ``shape`` and basic slicing;
            leading axes are read whole.
        start: first voxel per spatial axis; may be negative.
        size: crop size per spatial axis in voxels.

    Returns:
        ``(..., *size)`` array of ``array``'s dtype.
    """
    crop = crop_padded(array, start, size)
    if crop is None:
        raise ValueError(f"crop at {tuple(start)} of size {tuple(size)} lies outside the array of shape {tuple(array.shape[-3:])}")
    return crop


class _LabelCrop:
    """A crop of dense label maps ``(S, cx, cy, cz)``, zero-padded: the proposal reader of arrays."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels

    def counts(self) -> list[np.ndarray]:
        # bincount is O(voxels), unlike np.unique's sort (10x slower on a 96^3 crop).
        return [np.bincount(labels.ravel()) for labels in self.labels]

    def paint(self, masks: Sequence[tuple[int, int]], out: np.ndarray) -> np.ndarray:
        for i, (scale, label) in enumerate(masks):
            out[i] = self.labels[scale] == label
        return out


def _proposal_crop(proposals: Any, start: np.ndarray, size: tuple[int, int, int]) -> CropRuns | _LabelCrop:
    """The proposals of the crop at ``start`` (may leave the volume: zero padding), to count and paint from."""
    if not isinstance(proposals, ProposalStore):
        return _LabelCrop(read_crop(proposals, start, size))
    # Only the part inside the volume is read; masks are painted at their place in the padded crop.
    lo = np.clip(start, 0, proposals.shape)
    hi = np.clip(start + np.asarray(size), 0, proposals.shape)
    if np.any(hi <= lo):
        raise ValueError(f"crop at {tuple(start)} of size {size} lies outside case {proposals.case_id!r} of shape {proposals.shape}")
    return proposals.crop_runs([slice(int(a), int(b)) for a, b in zip(lo, hi)], origin=start)


def _spatial_shape(proposals: Any) -> tuple[int, ...]:
    return tuple(proposals.shape) if isinstance(proposals, ProposalStore) else tuple(proposals.shape[1:])


class TaskSampler:
    """Draws MASS tasks keyed by ``(seed, step, index)``.

    Args:
        cases: sources of the training cases (:class:`CaseArrays`, :class:`NpyCase`
            or any :class:`CaseSource`, e.g. a proposal store).
        config: crop, mask and augmentation settings.
        weights: per-case draw weights (the datasets' ``pretrain_weight``); ``None`` draws uniformly.

    Example:
        >>> sampler = TaskSampler([case], SamplerConfig(crop_size=32, num_masks=4))
        >>> task = sampler.sample(seed=0, step=10, index=1)  # same arrays every time
    """

    def __init__(self, cases: Sequence[CaseSource], config: SamplerConfig, weights: Sequence[float] | None = None) -> None:
        if not cases:
            raise ValueError("cases must hold at least one case")
        self.cases = list(cases)
        self.draw_case = CaseDraw(len(self.cases), weights)
        self.config = config

    def sample(self, seed: int, step: int, index: int) -> TaskSample:
        """Task ``index`` of global step ``step`` of the run seeded ``seed``."""
        cfg = self.config
        rng = task_rng(seed, step, index)
        case_index = self.draw_case(rng)
        case = self.cases[case_index].open()
        shape = tuple(case.image.shape)
        if len(shape) != 3:
            raise ValueError(f"case {case.case_id!r}: image must be (X, Y, Z), got shape {shape}")
        if _spatial_shape(case.proposals) != shape:
            raise ValueError(f"case {case.case_id!r}: proposals must be (S, {shape}), got {tuple(case.proposals.shape)}")
        for _ in range(cfg.max_attempts):
            anchor, ref_start, query_start = self._boxes(rng, shape)
            ref_crop = _proposal_crop(case.proposals, ref_start, cfg.crop_size)
            candidates = self._candidates(ref_crop.counts())
            if candidates[0].size:
                break
        chosen = self._choose(rng, *candidates)

        k = cfg.num_masks
        # np.zeros, not zeros_like: calloc'd pages are zeroed only where written.
        ref_masks = np.zeros((k, *cfg.crop_size), np.uint8)
        query_masks = np.zeros((k, *cfg.crop_size), np.uint8)
        mask_ids = np.tile(np.array([-1, 0], np.int64), (k, 1))
        valid = np.zeros(k, bool)
        offset = int(cfg.full_mask)
        if cfg.full_mask:
            ref_masks[0] = query_masks[0] = 1
            mask_ids[0] = (-1, -1)
            valid[0] = True
        if chosen:
            slots = slice(offset, offset + len(chosen))
            ref_crop.paint(chosen, ref_masks[slots])
            _proposal_crop(case.proposals, query_start, cfg.crop_size).paint(chosen, query_masks[slots])
            mask_ids[slots] = chosen
            valid[slots] = True

        reference_image = augment_intensity(read_crop(case.image, ref_start, cfg.crop_size), rng, cfg.reference_intensity)
        query_image = augment_intensity(read_crop(case.image, query_start, cfg.crop_size), rng, cfg.query_intensity)
        return TaskSample(
            reference_image=reference_image[None],
            reference_masks=ref_masks,
            query_image=query_image[None],
            query_masks=query_masks,
            query_theta=random_affine(rng, cfg.query_spatial, cfg.crop_size),
            valid=valid,
            mask_ids=mask_ids,
            case_index=case_index,
            anchor=anchor,
            reference_start=ref_start,
            query_start=query_start,
        )

    def _boxes(self, rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Anchor, reference start and query start; both boxes contain the anchor."""
        size = np.asarray(self.config.crop_size)
        dims = np.asarray(shape)
        anchor = rng.integers(0, dims)
        # Positions that contain the anchor and stay inside the volume; a volume
        # smaller than the crop gets one centred, zero-padded position.
        small = dims < size
        lo = np.where(small, (dims - size) // 2, np.maximum(anchor - size + 1, 0))
        hi = np.where(small, (dims - size) // 2, np.minimum(anchor, dims - size))
        ref_start = rng.integers(lo, hi + 1)
        shift = np.rint(rng.uniform(-self.config.max_shift, self.config.max_shift, size=3) * size).astype(np.int64)
        query_start = np.clip(ref_start + shift, lo, hi)
        # Drawn on every call, so that the rest of the task's random stream does not depend on far_query.
        far = rng.random() < self.config.far_query
        if far:
            query_start = rng.integers(np.minimum(0, (dims - size) // 2), np.maximum(dims - size, (dims - size) // 2) + 1)
        return anchor.astype(np.int64), ref_start.astype(np.int64), query_start.astype(np.int64)

    def _candidates(self, counts: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Scales and labels of every proposal with enough voxels in the reference crop, by scale then label."""
        labels = [np.flatnonzero(c[1:] >= self.config.min_mask_voxels) + 1 for c in counts]
        scales = [np.full(found.size, scale, np.int64) for scale, found in enumerate(labels)]
        return np.concatenate([np.empty(0, np.int64), *scales]), np.concatenate([np.empty(0, np.int64), *labels])

    def _choose(self, rng: np.random.Generator, scales: np.ndarray, labels: np.ndarray) -> list[tuple[int, int]]:
        """Up to K (minus the all-ones slot) ``(scale, label)`` candidates, each scale equally likely."""
        wanted = min(self.config.num_masks - int(self.config.full_mask), labels.size)
        if not wanted:
            return []
        per_scale = np.bincount(scales)
        weights = 1.0 / per_scale[scales]
        picks = rng.choice(labels.size, size=wanted, replace=False, p=weights / weights.sum())
        return [(int(scales[i]), int(labels[i])) for i in picks]
