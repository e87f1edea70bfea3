"""The standardize stage: one raw case in, one training-ready case out.

Per case: validate, resample onto an axis-aligned RAS grid at the target
spacing (linear for images, nearest for labels), crop to the foreground ROI
with a margin (an intensity threshold, never the ground truth), normalise
intensities by modality, and save ``image.npy`` (+ ``label.npy``) with a
``meta.json`` that maps predictions back to the original image space.
See ``docs/data_format.md`` for the files.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import SimpleITK as sitk
from monai.transforms.utils import generate_spatial_bounding_box

from mass_core.arrays import largest_component
from mass_core.atomic import commit_folder, write_json, write_npy
from mass_core.config_section import from_section
from mass_core.datasets import CaseSource
from mass_core.errors import CaseError
from mass_core.geometry import Grid, ras_grid_covering, resample_to_grid
from mass_core.labels import foreground_classes, ignored
from mass_core.raw_case import read_case, read_crop_images
from mass_core.validation import check_image, check_label, image_array

__all__ = [
    "MODALITIES",
    "StandardizeParams",
    "StandardizedCase",
    "dataset_settings",
    "foreground_box",
    "normalise",
    "run_standardize",
    "standardize_case",
    "standardize_images",
]

MODALITIES = ("CT", "MR", "PET")
# A case folder is complete when its marker exists (written last).
CASE_MARKER = "meta.json"
CASE_MEMBERS = ("image.npy", "label.npy")
ROIS = ("body", "label_box")


@dataclass(frozen=True)
class StandardizeParams:
    """Settings of the standardize stage (config key ``standardize``).

    Args:
        spacing_mm: target voxel spacing (X, Y, Z) in mm.
        ct_clip_hu: CT intensity window in HU applied before the z-score.
        percentiles: MR/PET clipping percentiles, computed inside the foreground.
        ct_foreground_hu: CT voxels above this value (HU) count as foreground (body).
        foreground_fraction: MR/PET voxels above ``p_lo + fraction * (p_hi - p_lo)``
            count as foreground.
        margin_mm: margin kept around the foreground bounding box, in mm.
        roi: what the case is cropped to: ``"body"`` (the foreground box above,
            label-free) or ``"label_box"`` (the ground truth's bounding box plus
            ``label_margin_mm``, as the MASS paper's preprocessing does; it uses
            the labels, so a model never sees what lies outside them). A case
            without any labeled voxel is cropped to its body either way, and
            ``meta.json`` records which crop was used.
        label_margin_mm: margin (X, Y, Z) in mm around the label box (the paper's
            BTCV: 30, 30, 8); per dataset through ``datasets.<name>.standardize``.
    """

    spacing_mm: tuple[float, float, float] = (1.5, 1.5, 1.5)
    ct_clip_hu: tuple[float, float] = (-991.0, 500.0)
    percentiles: tuple[float, float] = (2.0, 98.0)
    ct_foreground_hu: float = -500.0
    foreground_fraction: float = 0.1
    margin_mm: float = 10.0
    roi: str = "body"
    label_margin_mm: tuple[float, float, float] = (30.0, 30.0, 30.0)

    CONFIG_KEYS = {"spacing": "spacing_mm"}
    # Read by run_standardize, which decides what a bad case does.
    OUTSIDE_KEYS = ("on_error",)

    def __post_init__(self) -> None:
        # Floats, so that meta.json records YAML integers the same as code floats.
        for name in ("spacing_mm", "ct_clip_hu", "percentiles", "label_margin_mm"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        for name in ("ct_foreground_hu", "foreground_fraction", "margin_mm"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if len(self.spacing_mm) != 3 or min(self.spacing_mm) <= 0:
            raise ValueError(f"spacing_mm must be three positive numbers, got {self.spacing_mm}")
        if self.ct_clip_hu[0] >= self.ct_clip_hu[1]:
            raise ValueError(f"ct_clip_hu must be increasing, got {self.ct_clip_hu}")
        if not 0 <= self.percentiles[0] < self.percentiles[1] <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= lo < hi <= 100, got {self.percentiles}")
        if not 0 <= self.foreground_fraction < 1:
            raise ValueError(f"foreground_fraction must be in [0, 1), got {self.foreground_fraction}")
        if self.margin_mm < 0:
            raise ValueError(f"margin_mm must be >= 0, got {self.margin_mm}")
        if self.roi not in ROIS:
            raise ValueError(f"roi must be one of {ROIS}, got {self.roi!r}")
        if len(self.label_margin_mm) != 3 or min(self.label_margin_mm) < 0:
            raise ValueError(f"label_margin_mm must be three numbers >= 0, got {self.label_margin_mm}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> StandardizeParams:
        """Build from the config's ``standardize`` section; unknown keys raise ``ValueError``."""
        return from_section(cls, section, "standardize")


def dataset_settings(section: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """One dataset's ``standardize`` settings: the section with the dataset's own values over it.

    Raises:
        ValueError: the result is not a valid :class:`StandardizeParams` (checked
            here, when Snakemake builds its jobs, rather than in every case's job).
    """
    merged = {**section, **override}
    StandardizeParams.from_config(merged)
    return merged


def foreground_box(
    array: np.ndarray, threshold: float, spacing_mm: tuple[float, float, float], margin_mm: float, case_id: str,
    joined: np.ndarray | None = None,
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Half-open box ``((i0, i1), (j0, j1), (k0, k1))`` around the body plus a margin.

    The body is the largest connected component above ``threshold``, so that
    scanner-table fragments and noise specks in the air do not widen the box.

    Args:
        joined: foreground of other images on the same grid (a subject's other
            modalities), added to ``array``'s before the largest component is taken.

    Raises:
        CaseError: no voxel lies above the threshold.
    """
    mask = array > threshold
    if not mask.any():
        raise CaseError(case_id, f"no foreground: no voxel above the threshold {threshold:g}")
    if joined is not None:
        mask |= joined
    return _box(largest_component(mask), spacing_mm, (margin_mm,) * 3)


def _box(mask: np.ndarray, spacing_mm: tuple[float, float, float],
         margin_mm: tuple[float, float, float]) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Half-open bounding box of ``mask`` plus a margin in mm per axis, inside the volume."""
    margin = [int(np.ceil(m / s)) for m, s in zip(margin_mm, spacing_mm)]
    start, end = generate_spatial_bounding_box(mask[None], margin=margin, allow_smaller=True)
    return tuple((int(lo), int(hi)) for lo, hi in zip(start, end))  # type: ignore[return-value]


def normalise(
    array: np.ndarray, foreground: np.ndarray, modality: str, params: StandardizeParams, case_id: str
) -> tuple[np.ndarray, dict[str, float]]:
    """Clip and z-score ``array`` by modality; statistics come from ``foreground`` voxels.

    CT is clipped to ``params.ct_clip_hu``; MR and PET to the foreground's
    ``params.percentiles``. Mean and standard deviation are taken over the
    clipped foreground, so that the amount of air in the field of view does
    not change the scale.

    Returns:
        the float32 normalised array and the statistics used (``clip_lo``,
        ``clip_hi``, ``mean``, ``std``).
    """
    if modality == "CT":
        lo, hi = params.ct_clip_hu
    else:
        lo, hi = (float(v) for v in np.percentile(array[foreground], params.percentiles))
    clipped = np.clip(array, lo, hi)
    values = clipped[foreground]
    mean, std = float(values.mean()), float(values.std())
    if std <= 1e-6 * max(1.0, abs(mean)):
        raise CaseError(case_id, f"foreground intensities are constant after clipping to [{lo:g}, {hi:g}]")
    normalised = ((clipped - mean) / std).astype(np.float32)
    return normalised, {"clip_lo": float(lo), "clip_hi": float(hi), "mean": mean, "std": std}


def _foreground_threshold(array: np.ndarray, modality: str, params: StandardizeParams) -> float:
    if modality == "CT":
        return params.ct_foreground_hu
    lo, hi = np.percentile(array, params.percentiles)
    return float(lo + params.foreground_fraction * (hi - lo))


@dataclass
class StandardizedCase:
    """A standardized case in memory (what :func:`standardize_case` writes to disk).

    Attributes:
        image: float32 ``(X, Y, Z)`` RAS, target spacing, normalised, cropped.
        label: ``(X, Y, Z)`` integer label map on the same grid, or ``None``.
        meta: the ``meta.json`` content (without ``source``, which only a file-based case has).
    """

    image: np.ndarray
    label: np.ndarray | None
    meta: dict[str, Any]


def standardize_images(image: sitk.Image, label: sitk.Image | None, case_id: str, modality: str,
                       params: StandardizeParams, ignore_label: int | None = None,
                       crop_with: Sequence[sitk.Image] = ()) -> StandardizedCase:
    """Validate and standardize an image (and its label) in memory.

    The file-based stage (:func:`standardize_case`) and inference on raw
    scans (:mod:`mass_core.evaluate.infer`) share this function, so that a
    scan seen at inference time is prepared exactly like a training case.

    Args:
        ignore_label: the dataset's value for unlabeled voxels, stored as
            :data:`~mass_core.labels.IGNORE_LABEL` and left out of ``label_classes``.
        crop_with: images co-registered with ``image`` (of the same modality
            class) whose foreground joins the image's in the body crop: cases
            passing the same set of images get the same box.

    Raises:
        CaseError: the image or label fails validation (see :mod:`mass_core.validation`).
    """
    if modality not in MODALITIES:
        raise CaseError(case_id, f"unknown modality {modality!r}; expected one of {MODALITIES}")
    check_image(image, case_id)
    if label is not None:
        label_values = check_label(label, image, case_id, ignore_label)
        # Rebuilt from the validated integer voxels, so that a label stored as
        # float resamples as class ids.
        label = sitk.GetImageFromArray(np.ascontiguousarray(label_values.transpose(2, 1, 0)))
        label.CopyInformation(image)

    grid = ras_grid_covering(image, params.spacing_mm)
    resampled = _resampled_image(image, grid, modality)
    threshold = _foreground_threshold(resampled, modality, params)
    # Nearest neighbour keeps IGNORE_LABEL intact; the fill value 0 outside
    # the original field of view is background, as there is no body there.
    full_label = None if label is None else image_array(
        resample_to_grid(label, grid, sitk.sitkNearestNeighbor, label.GetPixelID(), 0))
    labeled = None if full_label is None else (full_label > 0) & ~ignored(full_label)
    roi = "label_box" if params.roi == "label_box" and labeled is not None and labeled.any() else "body"
    if roi == "label_box":
        box = _box(labeled, params.spacing_mm, params.label_margin_mm)
    else:
        box = foreground_box(resampled, threshold, params.spacing_mm, params.margin_mm, case_id,
                             _joint_foreground(crop_with, grid, modality, params, case_id))
    crop = tuple(slice(lo, hi) for lo, hi in box)
    cropped = resampled[crop]
    body = cropped > threshold
    if not body.any():
        raise CaseError(case_id, f"no foreground inside the {roi} crop: no voxel above the threshold {threshold:g}")
    normalised, stats = normalise(cropped, body, modality, params, case_id)

    label_array = None
    label_classes: list[int] = []
    ignored_voxels = 0
    if full_label is not None:
        label_array = full_label[crop]
        label_classes = foreground_classes(label_array)
        ignored_voxels = int(np.count_nonzero(ignored(label_array)))
    meta = {
        "status": "ok",
        "case_id": case_id,
        "modality": modality,
        "original": Grid.of(image).to_dict(),
        "grid": grid.to_dict(),
        "crop_box": [list(b) for b in box],
        "roi": roi,
        "shape": list(normalised.shape),
        "spacing": list(params.spacing_mm),
        "foreground_threshold": threshold,
        "intensity": stats,
        "label_classes": label_classes,
        "ignore_label": ignore_label,
        "ignored_voxels": ignored_voxels,
        "params": dataclasses.asdict(params),
    }
    return StandardizedCase(normalised, label_array, meta)


def standardize_case(case: CaseSource, out_dir: str | os.PathLike, params: StandardizeParams) -> dict[str, Any]:
    """Standardize one case into ``out_dir`` and return its metadata.

    Writes ``image.npy``, ``label.npy`` (labeled cases) and ``meta.json``,
    whose presence marks a complete case: an earlier run's ``meta.json`` goes
    before anything is read, so a rerun that fails or is killed leaves no
    case that looks complete (:func:`~mass_core.atomic.commit_folder`).

    Raises:
        CaseError: the case fails validation (see :mod:`mass_core.validation`).
    """
    with commit_folder(out_dir, CASE_MARKER, CASE_MEMBERS) as folder:
        if case.modality not in MODALITIES:
            raise CaseError(case.case_id, f"unknown modality {case.modality!r}; expected one of {MODALITIES}")
        image, label = read_case(case)
        result = standardize_images(image, label, case.case_id, case.modality, params, case.ignore_label,
                                    read_crop_images(case))
        write_npy(folder / "image.npy", result.image)
        if result.label is not None:
            write_npy(folder / "label.npy", result.label)
        meta = {**result.meta, "source": _source(case)}
        if case.subject is not None:
            meta["subject"] = case.subject
        write_json(folder / CASE_MARKER, meta)
    return meta


def _source(case: CaseSource) -> dict[str, Any]:
    source: dict[str, Any] = {"image": str(case.image), "label": str(case.label) if case.label is not None else None}
    if case.label_parts:
        source["label_parts"] = {str(class_id): str(path) for class_id, path in case.label_parts}
    if case.frame is not None:
        source["frame"] = case.frame
    if case.crop_with:
        source["crop_with"] = [str(path) for path in case.crop_with]
    return source


def _resampled_image(image: sitk.Image, grid: Grid, modality: str) -> np.ndarray:
    return image_array(resample_to_grid(image, grid, sitk.sitkLinear, sitk.sitkFloat32, _air_value(image, modality)))


def _joint_foreground(images: Sequence[sitk.Image], grid: Grid, modality: str, params: StandardizeParams,
                      case_id: str) -> np.ndarray | None:
    """Union of the images' foregrounds on ``grid``, each above its own threshold; ``None`` without images."""
    joined = None
    for other in images:
        check_image(other, case_id)
        array = _resampled_image(other, grid, modality)
        mask = array > _foreground_threshold(array, modality, params)
        joined = mask if joined is None else joined | mask
    return joined


def _air_value(image: sitk.Image, modality: str) -> float:
    # Voxels outside the original field of view are filled with the darkest
    # value, so that they never count as foreground.
    if modality == "CT":
        return -1024.0
    return float(sitk.GetArrayViewFromImage(image).min())


def run_standardize(case: CaseSource, out_dir: str | os.PathLike, params: StandardizeParams, on_error: str) -> dict[str, Any]:
    """Standardize ``case``; on bad input fail or record a skipped case, as ``on_error`` says.

    Args:
        on_error: ``"fail"`` exits with the one-line reason; ``"skip"`` writes a
            ``meta.json`` with ``"status": "skipped"`` and the reason, which the
            manifest stage lists in ``skipped.csv``.
    """
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    try:
        return standardize_case(case, out_dir, params)
    except CaseError as err:
        if on_error == "fail":
            raise SystemExit(f"standardize failed: {err}") from None
        print(f"skipped: {err}", file=sys.stderr)
        meta = {"status": "skipped", "case_id": case.case_id, "stage": "standardize", "reason": err.reason,
                "source": _source(case)}
        write_json(Path(out_dir) / CASE_MARKER, meta)
        return meta
