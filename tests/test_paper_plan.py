"""config/paper.yaml plans the paper's whole experiment on mimics of its 13 releases, under one data_root."""

from __future__ import annotations

import importlib
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from mass_core.datasets import list_cases
from mass_core.manifest import read_case_table
from test_workflow import REPO, snakemake

sys.path.insert(0, str(Path(__file__).parent / "recipes"))

PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
# Mimic module -> the folder under data_root that config/paper.yaml names for its release.
RELEASES = {"mimic_bcv": "BTCV", "mimic_amos": "AMOS22", "mimic_kits": "kits19/data", "mimic_lits": "LiTS",
            "mimic_structseg": "StructSeg2019", "mimic_mnm": "MnM", "mimic_brats18": "BraTS2018", "mimic_autopet": "autoPET",
            "mimic_rsna_ich": "RSNA_ICH"}


def _write_mimics(data_root: Path) -> None:
    for module, folder in RELEASES.items():
        importlib.import_module(module).write(data_root / folder)
    # One TotalSegmentator mimic holds both releases, as ct/ and mr/.
    importlib.import_module("mimic_totalseg").write(data_root / "TotalSegmentator")
    (data_root / "TotalSegmentator" / "ct").rename(data_root / "TotalSegmentator_CT")
    (data_root / "TotalSegmentator" / "mr").rename(data_root / "TotalSegmentator_MR")


@pytest.mark.slow
def test_paper_config_plans_every_study_on_the_mimics(tmp_path):
    data_root = tmp_path / "data"
    _write_mimics(data_root)
    # Run from a copy of the repository's config, as from the repository root: split tables are named from there.
    work = tmp_path / "work"
    shutil.copytree(REPO / "config", work / "config")
    start = time.perf_counter()
    out = snakemake("-n", "--forceall", "all", "--configfile", "config/paper.yaml",
                    "--config", f"data_root={data_root}", cwd=work).stdout
    seconds = time.perf_counter() - start
    counts = Counter()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total" and not parts[0].endswith(":"):
            counts[parts[0]] = int(parts[1])
    print(f"paper plan on the mimics: {sum(counts.values())} jobs in {seconds:.1f} s: {dict(counts)}")
    datasets, evaluation = PAPER["datasets"], PAPER["evaluation"]
    assert counts["manifest"] == len(datasets) == 16
    methods = PAPER["pretrain"]["methods"]
    assert counts["pretrain"] == len(methods) - 1 and counts["init_scratch"] == 1
    runs = len(evaluation["seeds"])
    assert counts["finetune_seg"] == len(evaluation["finetune_datasets"]) * len(methods) * len(evaluation["label_counts"]) * runs
    assert counts["incontext_fewshot"] == len(evaluation["fewshot_datasets"]) * len(evaluation["fewshot_k"]) * runs
    assert counts["linear_probe"] == len(evaluation["probe_datasets"]) * len(methods) * runs
    assert counts["paper_tables"] == counts["aggregate"] == 1
    # Every case of every release is standardized (M&Ms frames, BraTS modalities and autoPET studies each
    # count); proposals only for the pretraining datasets, not for RSNA-ICH's classification studies.
    assert counts["standardize"] > 3 * len(datasets)
    assert counts["proposal_recall"] == len(PAPER["pretrain"]["datasets"]) == 15


def test_paper_config_without_data_root_stops_with_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("MASS_DATA_ROOT", raising=False)
    result = snakemake("-n", "all", "--configfile", str(REPO / "config" / "paper.yaml"), cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "have roots under {data_root}, which is not set: pass --config data_root=/path/to/datasets or set MASS_DATA_ROOT" in result.stderr


def _shape(case_id: str) -> str:
    """A case id's form: every digit a 9, every letter an A (``case_00002`` -> ``AAAA_99999``)."""
    return re.sub(r"[A-Za-z]", "A", re.sub(r"\d", "9", case_id))


def test_recipes_name_cases_as_the_shipped_split_tables_do(tmp_path):
    # The split tables rename the official lists to the recipes' ids; a recipe naming its cases
    # otherwise would leave every case to the seeded split without a word.
    _write_mimics(tmp_path)
    for name, spec in PAPER["datasets"].items():
        if "split_table" not in spec:
            continue
        entry = {**spec, "root": spec["root"].replace("{data_root}", str(tmp_path))}
        listed = {_shape(case.case_id) for case in list_cases(entry)}
        shipped = {_shape(case_id) for case_id in read_case_table(REPO / spec["split_table"])["case_id"]}
        assert listed <= shipped, (name, sorted(listed - shipped))
