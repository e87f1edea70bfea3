"""The paper's split tables: read from the official lists as data, shipped in config/splits, consistent with paper.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mass_core.manifest import read_case_table
from mass_core.paper_splits import official_splits, split_tables, write_split_tables

REPO = Path(__file__).resolve().parents[1]
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())

OFFICIAL_STYLE = '''
import os
ft_train_test_split = {'kits_train': [0]}
train_test_split = {
    'kits_train': [0, 2, 11],
    'kits_val': [1],
    'kits_test': [43, 196],
    'bcv_train': ['img0030'],
    'bcv_test': ['img0006'],
}
'''


def test_official_lists_become_case_tables_with_recipe_ids(tmp_path):
    (tmp_path / "split.py").write_text(OFFICIAL_STYLE)
    assert official_splits(tmp_path / "split.py", "ft_train_test_split") == {"kits_train": [0]}
    tables = write_split_tables(tmp_path / "split.py", tmp_path / "out")
    assert sorted(tables) == ["bcv", "kits"]
    kits = read_case_table(tmp_path / "out" / "kits.csv")
    assert kits.values.tolist() == [["case_00000", "train"], ["case_00002", "train"], ["case_00011", "train"],
                                    ["case_00001", "val"], ["case_00043", "test"], ["case_00196", "test"]]
    with pytest.raises(ValueError, match="kits: cases in more than one split: \\['case_00001'\\]"):
        split_tables({"kits_train": [1], "kits_test": [1]})


# Train/val/test sizes the paper reports (pretraining and in-context lists).
PAPER_SIZES = {"bcv": (23, 1, 6), "amos_ct": (195, 5, 100), "amos_mr": (38, 2, 20), "kits": (159, 9, 42), "lits": (99, 6, 26),
               "structseg_thoracic_oar": (38, 2, 10), "structseg_head_oar": (39, 1, 10), "mnm": (518, 14, 108),
               "brats18_flair": (241, 13, 31), "totalseg_ct": (1078, 10, 138), "totalseg_mr": (245, 1, 27)}


@pytest.mark.parametrize("dataset", sorted(PAPER_SIZES))
def test_shipped_split_tables_have_the_papers_sizes(dataset):
    table = read_case_table(REPO / "config" / "splits" / f"{dataset}.csv")
    sizes = tuple(int((table["split"] == s).sum()) for s in ("train", "val", "test"))
    assert sizes == PAPER_SIZES[dataset]


def test_every_paper_dataset_with_a_split_table_has_it_and_its_references_are_train_cases():
    for name, spec in PAPER["datasets"].items():
        if "split_table" not in spec:
            continue
        table = read_case_table(REPO / spec["split_table"])
        train = set(table.loc[table["split"] == "train", "case_id"])
        for class_key, cases in spec.get("references", {}).items():
            assert set(cases) <= train, (name, class_key, cases)
    # The five in-context datasets all have fixed references.
    assert all(PAPER["datasets"][d].get("references") for d in PAPER["evaluation"]["fewshot_datasets"])


def test_pretraining_weights_are_the_official_samplers():
    weights = {name: spec.get("pretrain_weight", 1) for name, spec in PAPER["datasets"].items() if name in PAPER["pretrain"]["datasets"]}
    assert weights == {"bcv": 6, "structseg_head_oar": 8, "amos_mr": 5, "structseg_thoracic_oar": 3, "lits": 3, "kits": 3,
                       "totalseg_mr": 3, "amos_ct": 1.5, "mnm": 1.5, "brats18_flair": 1.5, "brats18_t1": 1.5,
                       "brats18_t2": 1.5, "autopet_suv": 0.7, "autopet_ct": 0.5, "totalseg_ct": 0.5}
    assert len(set(PAPER["pretrain"]["datasets"])) == 15
