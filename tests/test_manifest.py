from __future__ import annotations

import json

import pandas as pd
import pytest

from mass_core.manifest import SplitParams, assign_splits, build_manifest, read_case_table, read_manifest, write_listing_skip


def _meta(folder, case_id, status="ok"):
    folder.mkdir(parents=True)
    meta = {"status": status, "case_id": case_id, "source": {"image": "x", "label": "y"}}
    if status == "ok":
        meta |= {"modality": "CT", "label_classes": [1, 3], "shape": [10, 11, 12], "spacing": [1.5, 1.5, 1.5],
                 "original": {"spacing": [0.8, 0.8, 2.5]}}
    else:
        meta |= {"stage": "standardize", "reason": "image is constant"}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder / "meta.json"


def test_splits_are_deterministic_stratified_and_cover_every_case():
    ids = [f"c{i:02d}" for i in range(24)]
    strata = {cid: i % 2 for i, cid in enumerate(ids)}
    params = SplitParams(val_fraction=0.15, test_fraction=0.25, seed=3)
    first = assign_splits(ids, strata, {}, params)
    assert first == assign_splits(list(reversed(ids)), strata, {}, params)
    assert set(first) == set(ids)
    for stratum in (0, 1):
        members = [first[c] for c in ids if strata[c] == stratum]
        assert members.count("test") == 3 and members.count("val") == 2 and members.count("train") == 7
    assert first != assign_splits(ids, strata, {}, SplitParams(val_fraction=0.15, test_fraction=0.25, seed=4))


def test_fixed_splits_are_kept():
    ids = ["a", "b", "c", "d"]
    splits = assign_splits(ids, {}, {"a": "test", "b": "test"}, SplitParams(val_fraction=0.0, test_fraction=0.0))
    assert splits == {"a": "test", "b": "test", "c": "train", "d": "train"}


def test_cases_of_a_subject_share_a_split_that_other_subjects_do_not_move():
    # 400 subjects with 1-3 cases each (studies, frames or modalities of one patient).
    subjects = {f"p{s:03d}_{k}": f"p{s:03d}" for s in range(400) for k in range(1 + s % 3)}
    params = SplitParams(val_fraction=0.15, test_fraction=0.25, seed=3)
    splits = assign_splits(list(subjects), {}, {}, params, subjects)
    by_subject: dict[str, set[str]] = {}
    for cid, subject in subjects.items():
        by_subject.setdefault(subject, set()).add(splits[cid])
    assert all(len(found) == 1 for found in by_subject.values())
    shares = {name: sum(found == {name} for found in by_subject.values()) / 400 for name in ("train", "val", "test")}
    assert abs(shares["test"] - 0.25) < 0.06 and abs(shares["val"] - 0.15) < 0.06
    # Another dataset of the same subjects, lacking every third case: each remaining case keeps its split.
    fewer = {cid: subject for i, (cid, subject) in enumerate(subjects.items()) if i % 3}
    assert assign_splits(list(fewer), {}, {}, params, fewer) == {cid: splits[cid] for cid in fewer}
    assert splits != assign_splits(list(subjects), {}, {}, SplitParams(val_fraction=0.15, test_fraction=0.25, seed=4), subjects)


def test_a_subject_follows_its_fixed_case_and_cases_without_subject_split_as_before():
    ids = [f"c{i:02d}" for i in range(24)]
    params = SplitParams(val_fraction=0.15, test_fraction=0.25, seed=3)
    subjects = {"s_0": "s", "s_1": "s", "s_2": "s"}
    splits = assign_splits(ids + list(subjects), {}, {"s_1": "val"}, params, subjects)
    assert [splits[cid] for cid in subjects] == ["val"] * 3
    assert {cid: splits[cid] for cid in ids} == assign_splits(ids, {}, {}, params)


@pytest.mark.parametrize("val, test", [(-0.1, 0.2), (0.5, 0.5)])
def test_split_params_reject_bad_fractions(val, test):
    with pytest.raises(ValueError, match="val_fraction"):
        SplitParams(val_fraction=val, test_fraction=test)


def test_manifest_lists_usable_cases_and_reports_skipped_ones(tmp_path):
    metas = [_meta(tmp_path / f"std/{cid}", cid) for cid in ("b", "a", "c", "d")] + [_meta(tmp_path / "std/bad", "bad", "skipped")]
    pd.DataFrame({"case_id": ["a", "b", "c", "d", "bad"], "class_label": [1, 0, 1, 0, 1]}).to_csv(tmp_path / "classes.csv", index=False)
    manifest = build_manifest(metas, tmp_path / "manifest.parquet", tmp_path / "skipped.csv", SplitParams(), tmp_path / "classes.csv")
    assert list(manifest["case_id"]) == ["a", "b", "c", "d"]
    assert list(manifest["class_label"]) == [1, 0, 1, 0]
    assert manifest.loc[0, "image"].endswith("std/a/image.npy") and list(manifest.loc[0, "label_classes"]) == [1, 3]
    assert manifest.loc[0, "original_spacing_z"] == 2.5
    skipped = pd.read_csv(tmp_path / "skipped.csv")
    assert skipped.to_dict("records") == [{"case_id": "bad", "stage": "standardize", "reason": "image is constant"}]
    stored = read_manifest(tmp_path / "manifest.parquet")
    assert stored.drop(columns="label_classes").equals(manifest.drop(columns="label_classes"))
    assert [list(v) for v in stored["label_classes"]] == [[1, 3]] * 4
    assert set(read_manifest(tmp_path / "manifest.parquet", "train")["split"]) <= {"train"}


def test_skipped_csv_exists_when_nothing_was_skipped(tmp_path):
    build_manifest([_meta(tmp_path / "a", "a")], tmp_path / "m.parquet", tmp_path / "s.csv", SplitParams())
    assert pd.read_csv(tmp_path / "s.csv").empty


def test_case_folders_the_listing_left_out_join_skipped_csv_as_stage_listing(tmp_path):
    metas = [_meta(tmp_path / "std/case_1", "case_1"), _meta(tmp_path / "std/case_3", "case_3", "skipped")]
    rows = [("12", "no 12/data.nii.gz, 12/data.nii"), ("case_2", "no case_2/imaging.nii.gz")]
    for case_id, reason in rows:
        write_listing_skip(case_id, reason, tmp_path / "listing" / case_id / "meta.json")
        metas.append(tmp_path / "listing" / case_id / "meta.json")
    manifest = build_manifest(metas, tmp_path / "m.parquet", tmp_path / "s.csv", SplitParams())
    assert list(manifest["case_id"]) == ["case_1"]
    assert pd.read_csv(tmp_path / "s.csv", dtype=str, keep_default_na=False).to_dict("records") == [
        {"case_id": "12", "stage": "listing", "reason": "no 12/data.nii.gz, 12/data.nii"},
        {"case_id": "case_2", "stage": "listing", "reason": "no case_2/imaging.nii.gz"},
        {"case_id": "case_3", "stage": "standardize", "reason": "image is constant"},
    ]


def test_case_table_with_unknown_split_is_rejected(tmp_path):
    pd.DataFrame({"case_id": ["a"], "split": ["holdout"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match="unknown split names"):
        read_case_table(tmp_path / "t.csv")


@pytest.mark.parametrize("value, shown", [("x", "'x'"), ("1.5", "1.5"), ("inf", "inf")])
def test_case_table_with_a_class_label_that_is_no_integer_names_file_case_and_value(tmp_path, value, shown):
    (tmp_path / "t.csv").write_text(f"case_id,class_label\na,1\nb,{value}\nc,\n")
    with pytest.raises(ValueError) as caught:
        read_case_table(tmp_path / "t.csv")
    assert str(caught.value) == f"{tmp_path / 't.csv'}: case 'b': class_label {shown} is not an integer class id"


def test_case_table_class_labels_are_whole_numbers_or_missing(tmp_path):
    (tmp_path / "t.csv").write_text("case_id,class_label\na,1\nb,2.0\nc,\n")
    assert list(read_case_table(tmp_path / "t.csv")["class_label"].astype(object).fillna(-1)) == [1, 2, -1]


def test_a_split_table_joins_the_class_table_and_clashes_are_named(tmp_path):
    from mass_core.manifest import read_case_tables

    (tmp_path / "classes.csv").write_text("case_id,class_label,split\na,1,\nb,0,test\nc,1,\n")
    (tmp_path / "splits.csv").write_text("case_id,split\na,train\nb,test\nd,val\n")
    table = read_case_tables([tmp_path / "classes.csv", tmp_path / "splits.csv"]).set_index("case_id")
    assert table["split"].fillna("-").to_dict() == {"a": "train", "b": "test", "c": "-", "d": "val"}
    assert table["class_label"].astype(object).fillna(-1).to_dict() == {"a": 1, "b": 0, "c": 1, "d": -1}
    (tmp_path / "other.csv").write_text("case_id,split\nb,val\n")
    with pytest.raises(ValueError, match=r"case 'b': split 'test' in an earlier table but 'val' in .*other.csv"):
        read_case_tables([tmp_path / "classes.csv", tmp_path / "other.csv"])
