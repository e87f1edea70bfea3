"""Fault injection: a stage killed with SIGKILL at any commit of a file, then rerun, gives the uninterrupted outputs.

Each job runs in a subprocess whose ``os.replace`` (the commit of every atomic
write) kills the process at its n-th call: the temporary file is complete but
not yet under its final name, the last moment before the outputs change.
Every n from 1 to the job's number of commits is tried. After each kill,
nothing half-written may look complete: the folder's marker file is absent,
or the outputs already equal the uninterrupted run's. The rerun must then
produce those outputs exactly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from mass_core.atomic import PARTIAL
from mass_core.pretrain.synthetic import write_synthetic_dataset

from evaluate.conftest import write_dataset
from volumes import sphere_phantom

pytestmark = pytest.mark.slow

# Runs before the job's code: counts commits, and SIGKILLs its own process at the n-th (argv[1]; 0 = never).
_PRELUDE = """
import atexit, os, signal, sys
_KILL_AT, _replace, _calls = int(sys.argv[1]), os.replace, [0]
def _replace_or_die(*args, **kwargs):
    _calls[0] += 1
    if _calls[0] == _KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    return _replace(*args, **kwargs)
os.replace = _replace_or_die
atexit.register(lambda: print(f"commits={_calls[0]}"))
"""
_ONE_THREAD = "import torch\ntorch.set_num_threads(1)\n"


def _run(job: str, kill_at: int = 0) -> int:
    """Run ``job`` in a fresh interpreter; return its number of commits, or -1 when it was killed."""
    result = subprocess.run([sys.executable, "-c", _PRELUDE + job, str(kill_at)], capture_output=True, text=True, timeout=300)
    if kill_at:
        assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
        return -1
    assert result.returncode == 0, result.stderr[-2000:]
    return int(re.findall(r"commits=(\d+)", result.stdout)[-1])


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_no_temporaries(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if PARTIAL in p.name]


def _kill_everywhere(job: str, out: Path, before: Path | None, complete, check_rerun) -> int:
    """Kill ``job`` at each of its commits; each time check what it left, rerun, and compare.

    Args:
        job: the stage's code; writes into ``out``.
        out: the output folder.
        before: a finished earlier run's folder, copied onto ``out`` before each try
            (a rerun into a finished folder), or None to start empty.
        complete: ``complete(out)`` is True when ``out`` holds what a reader takes for a
            finished result; it must then be the uninterrupted one (``check_rerun``).
        check_rerun: asserts that ``out`` equals the uninterrupted run's outputs.
    Returns:
        the number of commits tried.
    """
    commits = _run(job)
    check_rerun(out)
    for kill_at in range(1, commits + 1):
        shutil.rmtree(out)
        if before is not None:
            shutil.copytree(before, out)
        _run(job, kill_at)
        if out.exists() and complete(out):
            check_rerun(out)
        _run(job)
        check_rerun(out)
        _assert_no_temporaries(out)
    return commits


@pytest.fixture(scope="module")
def raw_case(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("raw")
    image, label, _ = sphere_phantom()
    sitk.WriteImage(image, str(root / "img.nii.gz"))
    sitk.WriteImage(label, str(root / "lab.nii.gz"))
    return root / "img.nii.gz", root / "lab.nii.gz"


def _standardize_job(raw_case, out: Path, spacing: float) -> str:
    image, label = raw_case
    return f"""
from mass_core.datasets import CaseSource
from mass_core.standardize import StandardizeParams, run_standardize
run_standardize(CaseSource("s", {str(image)!r}, {str(label)!r}, "CT"), {str(out)!r},
                StandardizeParams(spacing_mm=({spacing}, {spacing}, {spacing})), on_error="fail")
"""


def _meta_ok(folder: Path) -> bool:
    return (folder / "meta.json").is_file() and json.loads((folder / "meta.json").read_text())["status"] == "ok"


def test_standardize_killed_while_rewriting_a_finished_case(raw_case, tmp_path):
    # The finished case from other settings: its old meta.json must never stand beside new arrays.
    _run(_standardize_job(raw_case, tmp_path / "old", 3.0))
    _run(_standardize_job(raw_case, tmp_path / "reference", 2.0))
    reference = _files(tmp_path / "reference")

    def check(out):
        assert _files(out) == reference

    commits = _kill_everywhere(_standardize_job(raw_case, tmp_path / "out", 2.0), tmp_path / "out", tmp_path / "old",
                               _meta_ok, check)
    assert commits == 3  # image.npy, label.npy, meta.json


def _propose_job(case: Path, out: Path, qc: Path, scales: list[float]) -> str:
    return f"""
from mass_core.proposals import ProposalParams, propose_case
propose_case({str(case / "image.npy")!r}, {str(out)!r}, "s",
             ProposalParams(scales_mm3={tuple(scales)!r}, min_volume_mm3=200.0),
             qc_png={str(qc)!r})
"""


def test_propose_killed_while_rewriting_a_finished_store(raw_case, tmp_path):
    case = tmp_path / "case"
    _run(_standardize_job(raw_case, case, 2.0))
    _run(_propose_job(case, tmp_path / "old", tmp_path / "old.png", [2.0]))
    _run(_propose_job(case, tmp_path / "reference", tmp_path / "reference.png", [1.0, 4.0]))
    reference = _files(tmp_path / "reference")

    def check(out):
        assert _files(out) == reference
        assert (tmp_path / "qc.png").read_bytes() == (tmp_path / "reference.png").read_bytes()

    commits = _kill_everywhere(_propose_job(case, tmp_path / "out", tmp_path / "qc.png", [1.0, 4.0]),
                               tmp_path / "out", tmp_path / "old", lambda out: (out / "summary.json").is_file(), check)
    assert commits == 4  # proposals.h5, proposals.parquet, the QC picture, summary.json


def _weights(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)
    return {**{f"model.{k}": v for k, v in state["model"].items()}, **{f"ema.{k}": v for k, v in state["ema"].items()},
            "step": torch.tensor(state["step"])}


def test_pretraining_killed_at_any_checkpoint_resumes_to_the_uninterrupted_weights(tmp_path):
    from pretrain.tiny_models import TINY_ENCODER, TINY_MASS

    data = write_synthetic_dataset(tmp_path / "data", n_cases=3, shape=(24, 24, 24))
    sections = {"train": {"steps": 4, "batch_size": 2, "checkpoint_every": 2, "log_every": 2},
                "encoder": TINY_ENCODER, "mass": TINY_MASS}

    def job(out: Path) -> str:
        return _ONE_THREAD + f"""
from mass_core.pretrain.run import run_pretraining
result = run_pretraining("mass", {str(data.manifest)!r}, {str(data.proposals_root)!r}, {str(out)!r}, {sections!r})
assert result.exit_code == 0
"""

    _run(job(tmp_path / "reference"))
    reference = _weights(tmp_path / "reference" / "final.pt")
    reference_encoder = torch.load(tmp_path / "reference" / "encoder.pt", weights_only=True)["state_dict"]
    reference_steps = pd.read_csv(tmp_path / "reference" / "metrics.csv")["step"].tolist()

    def check(out):
        weights = _weights(out / "final.pt")
        assert all(torch.equal(weights[k], reference[k]) for k in reference)
        encoder = torch.load(out / "encoder.pt", weights_only=True)["state_dict"]
        assert all(torch.equal(encoder[k], reference_encoder[k]) for k in reference_encoder)
        assert pd.read_csv(out / "metrics.csv")["step"].tolist() == reference_steps
        assert not (out / "latest.pt").exists()

    commits = _kill_everywhere(job(tmp_path / "out"), tmp_path / "out", None,
                               lambda out: (out / "final.pt").is_file() and (out / "encoder.pt").is_file(), check)
    assert commits >= 4  # the step-2 checkpoint, the metrics log, final.pt, encoder.pt


def test_finetuning_killed_at_any_commit_reruns_to_the_uninterrupted_metrics(tmp_path):
    manifest = write_dataset(tmp_path / "data", {"train": [0, 1], "val": [2], "test": [3]})

    def job(out: Path, seed: int = 0) -> str:
        return _ONE_THREAD + f"""
from mass_core.evaluate.finetune import FinetuneParams, run_finetune
from mass_core.evaluate.subsets import Budget
from mass_core.models.encoder import EncoderConfig
run_finetune({str(manifest)!r}, {str(out)!r}, dataset="tiny", method="scratch", budget=Budget("fraction", 1.0),
             seed={seed}, subset_seed=0, encoder_weights=None,
             encoder_config=EncoderConfig(channels=(4, 8, 8), blocks_per_stage=1),
             params=FinetuneParams(steps=4, crop=(16, 16, 16), batch=2, val_every=2, roi=(16, 16, 16), device="cpu", checkpoint_every=2),
             threads=1)
"""

    _run(job(tmp_path / "old", seed=1))
    _run(job(tmp_path / "reference"))
    reference = pd.read_parquet(tmp_path / "reference" / "metrics.parquet")
    predictions = dict(np.load(tmp_path / "reference" / "predictions.npz"))
    timing = {"train_seconds", "total_seconds", "cpu_seconds"}
    summary = {k: v for k, v in json.loads((tmp_path / "reference" / "summary.json").read_text()).items() if k not in timing}

    def check(out):
        pd.testing.assert_frame_equal(pd.read_parquet(out / "metrics.parquet"), reference)
        again = dict(np.load(out / "predictions.npz"))
        assert again.keys() == predictions.keys() and all(np.array_equal(again[k], predictions[k]) for k in predictions)
        written = json.loads((out / "summary.json").read_text())
        assert {k: v for k, v in written.items() if k not in timing} == summary

    commits = _kill_everywhere(job(tmp_path / "out"), tmp_path / "out", tmp_path / "old",
                               lambda out: (out / "summary.json").is_file(), check)
    # training/: metrics.csv, validation.csv, latest.pt (step 2), encoder.pt, final.pt; then metrics.parquet, predictions.npz, summary.json
    assert commits == 8
