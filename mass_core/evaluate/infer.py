"""In-context segmentation of raw scans outside the pipeline (``mass-core infer``).

Given a MASS checkpoint, reference scans with masks and test scans
(NIfTI, NRRD or MetaImage), each scan is standardized in memory exactly like
a training case (:func:`mass_core.standardize.standardize_images`: RAS,
target spacing, intensity normalisation, body crop), segmented in context
with a sliding window, and the segmentation is written back on the test
scan's own grid (size, spacing, origin, direction) with
:func:`mass_core.geometry.to_original_space`.

Standardization: the settings the checkpoint was trained with (its
``standardization`` record, :mod:`mass_core.trained_standardization`);
``--modality``, ``--spacing``, ``--ct-window``, ``--percentiles`` and
``--margin`` replace the checkpoint's. A checkpoint written before it
carried the record needs ``--spacing``; its other settings then take the
pipeline's defaults. Reference crop and sliding window: the crop the
checkpoint was trained on (its ``crop_size``, MASS's
``pretrain.mass.sampler.crop_size``); ``--crop`` and ``--roi`` replace it,
and a checkpoint written before it carried the crop needs both. The log
says which settings were used and where each came from. Only the body box
is segmented (the standardized crop), so air around the patient costs no
windows.

References: every non-zero value of a reference mask is one task (a
multi-label mask gives one task per label). A label's task tokens are
averaged over all references that contain it. The output label map gives a
voxel the label of highest probability among those above the threshold
(0 where none is).

Scans are read like the standardize stage reads them. Errors a user can act
on (a mask whose grid differs from its image, an unsupported or unreadable
file, a checkpoint that is not a MASS training checkpoint) stop the command with a one-line message.

Example::

    mass-core infer --checkpoint results/pretrain/mass/final.pt \\
        --reference ref_ct.nii.gz ref_organs.nii.gz --out-dir predictions/ scan1.nii.gz scan2.nrrd
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from mass_core.atomic import write_with
from mass_core.errors import CaseError
from mass_core.evaluate.fewshot import FewshotParams, class_probabilities, load_incontext_checkpoint, load_incontext_segmenter, reference_tokens
from mass_core.evaluate.windows import available_cpus, check_window, resolve_device
from mass_core.geometry import to_original_space
from mass_core.imageio import IMAGE_SUFFIXES, read_image
from mass_core.labels import foreground_classes
from mass_core.standardize import MODALITIES, StandardizeParams, standardize_images
from mass_core.trained_standardization import resolve_standardization, resolve_window

__all__ = ["InferParams", "Segmenter", "build_segmenter", "label_map", "main_infer", "read_scan", "run_inference", "segment_scan"]

# Standardized (X, Y, Z) image -> probabilities (K, X, Y, Z) of the K labels.
Segmenter = Callable[[np.ndarray], np.ndarray]
# Windows per forward pass. On CPU a batch of one runs PyTorch's slow reference
# 3D convolution (see FewshotParams.sw_batch). Demo model, 32^3 windows: one
# thread costs the same per window at 2, 4 or 8 (0.08-0.11 CPU s); two threads
# on busy cores lose less to waiting for each other with larger passes (8: 1.2 s
# per window, 4: 1.7 s, 2: 2.0 s).
SW_BATCH = 4


@dataclass(frozen=True)
class InferParams:
    """Settings of ``mass-core infer``.

    Args:
        modality: ``CT``, ``MR`` or ``PET`` (intensity normalisation).
        standardize: resampling, normalisation and crop; use the pretraining data's settings.
        window: reference crop, sliding window, threshold and device, as for the
            pipeline's few-shot job (:class:`~mass_core.evaluate.fewshot.FewshotParams`);
            use the pretraining crop size for ``crop`` and ``roi`` (the checkpoint's
            ``crop_size``, see :func:`~mass_core.trained_standardization.resolve_window`).
    """

    modality: str = "CT"
    standardize: StandardizeParams = field(default_factory=StandardizeParams)
    window: FewshotParams = field(default_factory=FewshotParams)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")


def read_scan(path: str | os.PathLike, role: str) -> sitk.Image:
    """Read a NIfTI / NRRD / MetaImage scan through the standardize stage's reader.

    A scan the standardize stage reads (:func:`~mass_core.imageio.read_image`)
    is read here too, a NIfTI or NRRD without orientation fields included.
    Only the file type is checked on top: the segmentation is written in the
    scan's own format and file name, which a DICOM folder does not have.

    Args:
        path: the file.
        role: what the file is (``"reference image"``, ``"test image"``...), for messages.

    Raises:
        CaseError: unsupported file type, or a file :func:`~mass_core.imageio.read_image` rejects.
    """
    path = Path(path)
    if not path.name.lower().endswith(IMAGE_SUFFIXES):
        raise CaseError(f"{role} {path}", "unsupported file type; use NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) or MetaImage (.mha, .mhd)")
    return read_image(path, f"{role} {path}")


def label_map(probabilities: np.ndarray, labels: Sequence[int], threshold: float) -> np.ndarray:
    """Label map ``(X, Y, Z)`` from per-label probabilities ``(K, X, Y, Z)``.

    A voxel takes the label of highest probability among those above
    ``threshold``; 0 where no probability exceeds it.
    """
    labels = np.asarray(labels)
    dtype = np.uint8 if labels.max() <= np.iinfo(np.uint8).max else np.uint16
    best = probabilities.argmax(axis=0)
    above = probabilities.max(axis=0) > threshold
    return np.where(above, labels[best], 0).astype(dtype)


def segment_scan(image: sitk.Image, segmenter: Segmenter, labels: Sequence[int], params: InferParams, name: str) -> sitk.Image:
    """Standardize ``image`` in memory, segment it, and return the label map on ``image``'s grid.

    Args:
        image: the test scan.
        segmenter: standardized volume -> probabilities of ``labels``.
        labels: label value of each probability channel.
        params: standardization and threshold.
        name: the scan's name in error messages.

    Returns:
        an integer image with the size, spacing, origin and direction of ``image``.
    """
    case = standardize_images(image, None, name, params.modality, params.standardize)
    probabilities = segmenter(case.image)
    if probabilities.shape != (len(labels), *case.image.shape):
        raise ValueError(f"segmenter returned shape {probabilities.shape}, expected {(len(labels), *case.image.shape)}")
    predicted = label_map(probabilities, labels, params.window.threshold)
    return to_original_space(predicted, case.meta)


def build_segmenter(checkpoint: str | os.PathLike, references: Sequence[tuple[str | os.PathLike, str | os.PathLike]],
                    params: InferParams, labels: Sequence[int] | None = None) -> tuple[Segmenter, list[int]]:
    """The in-context segmenter of a MASS checkpoint, conditioned on reference scans and masks.

    Args:
        checkpoint: a MASS training checkpoint (``final.pt``).
        references: (image, mask) file pairs; each mask on its image's grid.
        params: inference settings.
        labels: labels to segment; ``None`` takes every label found in the references.

    Returns:
        the segmenter (task tokens computed once) and the label of each output channel.

    Raises:
        CaseError: a reference cannot be read or its mask does not match its image.
        ValueError: a requested label occurs in no reference, or no reference has a label.
    """
    if not references:
        raise ValueError("at least one --reference IMAGE MASK pair is required")
    device = resolve_device(params.window.device)
    model = load_incontext_segmenter(checkpoint).to(device)
    factor = model.config.encoder.downsampling_factor
    window = params.window
    crop, roi = check_window(window.crop, factor, "crop"), check_window(window.roi, factor, "roi")
    standardized = {}
    for i, (image_path, mask_path) in enumerate(references):
        name = f"reference {Path(image_path).name} (mask {Path(mask_path).name})"
        image = read_scan(image_path, "reference image")
        mask = read_scan(mask_path, "reference mask")
        case = standardize_images(image, mask, name, params.modality, params.standardize)
        standardized[f"{i}:{name}"] = (case.image, case.label)
    found = sorted({c for _, label in standardized.values() for c in foreground_classes(label)})
    wanted = found if labels is None else sorted(int(v) for v in labels)
    if not wanted:
        raise ValueError("the reference masks have no non-zero label inside the scanned body")
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise ValueError(f"labels {missing} occur in no reference mask (found {found})")
    chosen = {c: [key for key, (_, label) in standardized.items() if (np.asarray(label) == c).any()] for c in wanted}
    tokens = reference_tokens(model, standardized, chosen, crop, device)

    def segment(volume: np.ndarray) -> np.ndarray:
        return class_probabilities(model, volume, tokens, roi, window.overlap, window.sw_batch, device)

    return segment, wanted


def run_inference(checkpoint: str | os.PathLike, references: Sequence[tuple[str | os.PathLike, str | os.PathLike]],
                  images: Sequence[str | os.PathLike], out_dir: str | os.PathLike, params: InferParams,
                  labels: Sequence[int] | None = None) -> list[Path]:
    """Segment ``images`` in context and write ``out_dir/<image file name>`` for each (same format).

    Returns:
        the written files, in the order of ``images``.

    Raises:
        ValueError: an output would overwrite its input, or see :func:`build_segmenter`.
        CaseError: a test image is unreadable or fails validation.
    """
    out_dir = Path(out_dir)
    targets = [out_dir / Path(p).name for p in images]
    for source, target in zip(images, targets):
        if target.resolve() == Path(source).resolve():
            raise ValueError(f"output {target} would overwrite its input; choose another --out-dir")
    # Read every test scan first, so that a bad file fails before minutes of inference.
    scans = [read_scan(p, "test image") for p in images]
    segmenter, wanted = build_segmenter(checkpoint, references, params, labels)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, scan, target in zip(images, scans, targets):
        segmentation = segment_scan(scan, segmenter, wanted, params, f"test image {Path(path).name}")
        write_with(target, lambda tmp, image=segmentation: sitk.WriteImage(image, str(tmp), useCompression=True))
        print(f"{path} -> {target} (labels {wanted})", file=sys.stderr)
    return targets


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mass-core infer", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="test scans (NIfTI, NRRD or MetaImage)")
    parser.add_argument("--checkpoint", required=True, help="MASS training checkpoint (results/pretrain/mass/final.pt)")
    parser.add_argument("--reference", nargs=2, action="append", required=True, metavar=("IMAGE", "MASK"),
                        help="a reference scan and its mask (repeat for an ensemble); each non-zero mask value is one label")
    parser.add_argument("--out-dir", required=True, help="folder for the segmentations (named like the inputs)")
    parser.add_argument("--labels", type=int, nargs="+", help="labels to segment (default: every label of the references)")
    standardize = parser.add_argument_group(
        "standardization", "default: the settings the checkpoint was trained with; an option given here replaces the checkpoint's")
    standardize.add_argument("--modality", choices=list(MODALITIES), help="the scans' modality (default: the checkpoint's)")
    standardize.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"),
                             help="standardized spacing in mm (required for a checkpoint that records no standardization)")
    standardize.add_argument("--ct-window", type=float, nargs=2, metavar=("LO", "HI"), help="CT clipping window in HU")
    standardize.add_argument("--percentiles", type=float, nargs=2, metavar=("LO", "HI"), help="MR/PET clipping percentiles")
    standardize.add_argument("--margin", type=float, metavar="MM", help="margin around the body box in mm")
    parser.add_argument("--crop", type=int, nargs=3, metavar=("X", "Y", "Z"), help="reference crop in voxels "
                        "(default: the checkpoint's training crop; required for a checkpoint that records none)")
    parser.add_argument("--roi", type=int, nargs=3, metavar=("X", "Y", "Z"), help="sliding window in voxels "
                        "(default: the checkpoint's training crop; required for a checkpoint that records none)")
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap (default: %(default)s)")
    parser.add_argument("--sw-batch", type=int, default=SW_BATCH, help="windows per forward pass (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default: %(default)s)")
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: the CPUs this process may use; "
                        "on a machine shared with other jobs 1 is often faster)")
    return parser


def _given(options: dict[str, object]) -> dict[str, object]:
    """The options given on the command line, lists as tuples."""
    return {name: tuple(value) if isinstance(value, list) else value for name, value in options.items() if value is not None}


def main_infer(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mass-core infer``; returns the exit status (1 on bad input, with a one-line message)."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    threads = args.threads or available_cpus()
    torch.set_num_threads(threads)
    try:
        state, source = load_incontext_checkpoint(args.checkpoint), f"checkpoint {args.checkpoint}"
        given = {"spacing_mm": args.spacing, "ct_clip_hu": args.ct_window, "percentiles": args.percentiles, "margin_mm": args.margin}
        resolved = resolve_standardization(state.standardization, args.modality, _given(given), source)
        sizes = resolve_window(state.crop_size, _given({"reference_crop": args.crop, "sliding_window": args.roi}), source)
        print(f"settings: {resolved.describe()}; {sizes.describe()}", file=sys.stderr)
        print(f"torch CPU threads: {threads}", file=sys.stderr)
        window = FewshotParams(crop=sizes.crop, roi=sizes.roi, overlap=args.overlap, threshold=args.threshold,
                               sw_batch=args.sw_batch, device=args.device)
        params = InferParams(modality=resolved.modality, standardize=resolved.params, window=window)
        run_inference(args.checkpoint, [tuple(r) for r in args.reference], args.images, args.out_dir, params, args.labels)
    except (CaseError, ValueError, FileNotFoundError) as error:
        print(f"mass-core infer: error: {error}", file=sys.stderr)
        return 1
    return 0
