from __future__ import annotations

import json

import numpy as np
import pytest

from mass_core.proposals import ProposalParams, ProposalStore, propose_case

from test_generate import body_with_organs

PARAMS = ProposalParams(scales_mm3=(20.0, 200.0), sigma_mm=0.5, min_volume_mm3=50.0, max_volume_mm3=1e5)


def standardized_case(directory, image, status="ok"):
    directory.mkdir(parents=True)
    meta = {"status": status, "spacing": [1.5, 1.5, 1.5]}
    if status == "ok":
        np.save(directory / "image.npy", image)
    else:
        meta["reason"] = "no foreground"
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory / "image.npy"


def test_propose_case_writes_store_summary_and_qc(tmp_path):
    image_path = standardized_case(tmp_path / "std" / "c1", body_with_organs())
    out = tmp_path / "prop" / "c1"
    summary = propose_case(image_path, out, "c1", PARAMS, qc_png=tmp_path / "qc" / "c1.png")
    assert summary["status"] == "ok" and summary["n_proposals"] == sum(summary["per_scale"]) > 0
    assert json.loads((out / "summary.json").read_text()) == summary
    store = ProposalStore(out)
    assert len(store.table) == summary["n_proposals"] and store.case_id == "c1"
    assert (tmp_path / "qc" / "c1.png").stat().st_size > 1000
    assert summary["params"] == PARAMS.to_dict()


@pytest.mark.parametrize(
    "image, status, reason",
    [
        (np.zeros((20, 20, 20), np.float32), "ok", "constant"),
        (None, "skipped", "standardize skipped the case: no foreground"),
    ],
)
def test_bad_cases_are_reported_not_dropped(tmp_path, image, status, reason):
    image_path = standardized_case(tmp_path / "std" / "c2", image, status)
    out = tmp_path / "prop" / "c2"
    summary = propose_case(image_path, out, "c2", PARAMS, on_error="skip", qc_png=tmp_path / "c2.png")
    assert summary["status"] == "skipped" and reason in summary["reason"]
    assert json.loads((out / "summary.json").read_text())["status"] == "skipped"
    assert not (out / "proposals.h5").exists() and (tmp_path / "c2.png").exists()
    with pytest.raises(SystemExit, match="c2"):
        propose_case(image_path, out, "c2", PARAMS, on_error="fail")
    with pytest.raises(ValueError, match="on_error"):
        propose_case(image_path, out, "c2", PARAMS, on_error="ignore")
