"""RSNA ICH recipe on a mimic of the Kaggle release: slices regrouped into series, study labels from slice labels."""

from __future__ import annotations

import mimic_rsna_ich
from mass_core.datasets import class_names, list_cases
from mass_core.manifest import read_case_table
from mass_core.raw_case import read_case
from mass_core.recipes.rsna_ich_prepare import main, prepare

MIMIC = mimic_rsna_ich
RELEASE_FOLDER = "RSNA_ICH"


def test_prepare_groups_slices_by_series_and_labels_each_series(tmp_path):
    mimic_rsna_ich.write_release(tmp_path / "kaggle")
    slices, labels, out = tmp_path / "kaggle" / "stage_2_train", tmp_path / "kaggle" / "stage_2_train.csv", tmp_path / "ich"
    done = prepare(slices, labels, out)
    assert done.series == 2 and done.unlabeled_series == [] and [p.name for p in done.unreadable] == ["ID_broken.dcm"]
    for series, (study, slice_ids) in mimic_rsna_ich.SERIES.items():
        assert sorted(p.stem for p in (out / "studies" / study / series).iterdir()) == sorted(slice_ids)
    table = read_case_table(out / "classes.csv")
    # One positive slice makes its series positive; repeated CSV rows change nothing.
    assert dict(zip(table["case_id"], table["class_label"])) == {"ID_series1": 1, "ID_series2": 0}
    # Rerunning over the linked slices is harmless.
    assert prepare(slices, labels, out).series == 2


def test_rsna_ich_recipe_reads_series_folders(release):
    spec = {"recipe": "rsna_ich", "root": str(release / mimic_rsna_ich.DATASETS["rsna_ich"]),
            "class_table": "classes.csv"}
    cases = list_cases(spec)
    assert [(c.case_id, c.subject, c.labeled) for c in cases] == [("ID_series1", "ID_study1", False),
                                                                  ("ID_series2", "ID_study2", False)]
    assert class_names(spec) == {}
    image, label = read_case(cases[0])
    assert image.GetSize() == (mimic_rsna_ich.SLICE_SIZE, mimic_rsna_ich.SLICE_SIZE, 4) and label is None
    assert image.GetPixel(3, 3, 0) == 40 and image.GetPixel(0, 0, 0) == -1000  # rescaled to HU


def test_prepare_command_line_reports_unlabeled_series_and_bad_csv(tmp_path, capsys):
    mimic_rsna_ich.write_release(tmp_path)
    args = ["--slices", str(tmp_path / "stage_2_train"), "--out", str(tmp_path / "ich")]
    rows = (tmp_path / "stage_2_train.csv").read_text().splitlines()
    (tmp_path / "series1_only.csv").write_text("\n".join(row for row in rows if not row.startswith("ID_0b")) + "\n")
    assert main([*args, "--labels", str(tmp_path / "series1_only.csv")]) == 0
    out = capsys.readouterr().out
    assert "2 series" in out and "1 series have no labeled slice (class_label left empty): ID_series2" in out
    assert "1 unreadable files left out: ID_broken.dcm" in out
    table = read_case_table(tmp_path / "ich" / "classes.csv")
    assert table["class_label"].isna().tolist() == [False, True]
    (tmp_path / "wrong.csv").write_text("image,hemorrhage\nID_0a1,1\n")
    assert main([*args, "--labels", str(tmp_path / "wrong.csv")]) == 1
    assert capsys.readouterr().err.strip().endswith("wrong.csv: expected the release's columns ID and Label, found ['image', 'hemorrhage']")
