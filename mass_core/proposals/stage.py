"""The propose stage: one standardized case in, one proposal store out."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mass_core.atomic import commit_folder, write_json
from mass_core.errors import CaseError
from mass_core.proposals.generate import ProposalParams, generate_proposals
from mass_core.proposals.qc import write_overlay, write_placeholder
from mass_core.proposals.store import LABELS_FILE, TABLE_FILE, ProposalSet, write_store

__all__ = ["ON_ERROR", "SUMMARY_FILE", "propose_case"]

SUMMARY_FILE = "summary.json"
ON_ERROR = ("fail", "skip")


def _read_case(image_path: Path, case_id: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    meta_path = image_path.parent / "meta.json"
    if not meta_path.is_file():
        raise CaseError(case_id, f"no meta.json beside {image_path}")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("status", "ok") != "ok":
        raise CaseError(case_id, f"standardize skipped the case: {meta.get('reason', 'no reason given')}")
    if not image_path.is_file():
        raise CaseError(case_id, f"standardized image {image_path} is missing")
    spacing = tuple(float(s) for s in meta["spacing"])
    return np.load(image_path), spacing  # type: ignore[return-value]


def propose_case(
    image_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    case_id: str,
    params: ProposalParams,
    *,
    on_error: str = "fail",
    qc_png: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Generate the proposals of one standardized case and write its store.

    Reads ``image_path`` (``image.npy``, float32 (X, Y, Z)) and the
    ``meta.json`` beside it (``spacing`` in mm, ``status``). Writes into
    ``out_dir`` ``proposals.h5`` and ``proposals.parquet`` (see
    :mod:`mass_core.proposals.store`) and last ``summary.json``, whose
    presence marks a complete case; an earlier run's summary goes before
    anything is read (:func:`~mass_core.atomic.commit_folder`).

    Args:
        params: generator settings.
        on_error: on bad input (:class:`CaseError`), ``"fail"`` exits with the
            one-line reason; ``"skip"`` writes a ``summary.json`` with
            ``"status": "skipped"`` and the reason and no store, so that the
            case is reported rather than silently dropped.
        qc_png: where to save the QC overlay (for a skipped case, a picture
            that says why), or None.

    Returns:
        the summary: ``status``, ``case_id``, ``reason`` (skipped),
        ``n_proposals``, ``per_scale`` (count per label map), ``shape``,
        ``spacing``, ``params``.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    image_path, out_dir = Path(image_path), Path(out_dir)
    started = time.perf_counter()
    try:
        with commit_folder(out_dir, SUMMARY_FILE, (LABELS_FILE, TABLE_FILE)):
            image, spacing = _read_case(image_path, case_id)
            proposals = generate_proposals(image, spacing, params, case_id)
            write_store(out_dir, proposals)
            summary = _summary(case_id, image, spacing, proposals, params)
            if qc_png is not None:
                write_overlay(image, proposals.label_maps, qc_png, spacing=spacing,
                              title=f"{case_id}: {summary['n_proposals']} proposals",
                              scale_names=[f"k={k:g}: {n}" for k, n in zip(proposals.scale_params, summary["per_scale"])])
            write_json(out_dir / SUMMARY_FILE, summary)
    except CaseError as err:
        print(f"error: {err}", file=sys.stderr)
        if on_error == "fail":
            raise SystemExit(f"propose failed: {err}") from None
        summary = {"status": "skipped", "case_id": case_id, "stage": "propose", "reason": err.reason}
        if qc_png is not None:
            write_placeholder(qc_png, f"{case_id}: skipped\n{err.reason}")
        write_json(out_dir / SUMMARY_FILE, summary)
        return summary
    seconds = time.perf_counter() - started
    print(f"case {case_id!r}: {summary['n_proposals']} proposals in {seconds:.1f} s", file=sys.stderr)
    return summary


def _summary(case_id: str, image: np.ndarray, spacing: tuple[float, float, float], proposals: ProposalSet,
             params: ProposalParams) -> dict[str, Any]:
    per_scale = proposals.table.groupby("scale").size().reindex(range(len(proposals.sources)), fill_value=0)
    return {
        "status": "ok",
        "case_id": case_id,
        "n_proposals": int(len(proposals.table)),
        "per_scale": [int(n) for n in per_scale],
        "shape": list(image.shape),
        "spacing": list(spacing),
        "params": params.to_dict(),
    }
