"""Every recipe names the case folders it cannot use instead of dropping them: the listing's skipped rows."""

from __future__ import annotations

import pytest

import mimic_autopet
import mimic_brats18
import mimic_kits
import mimic_mnm
import mimic_structseg
import mimic_totalseg
from mass_core.datasets import SkippedCase, list_dataset

_STUDY = mimic_autopet.STUDIES["PETCT_0af7ffe12a"][1]
_SUBJECT = "Brats18_2013_0_1"


# recipe, its mimic, the dataset's root in the mimic, the file removed there, the ids that go, the row reporting them
@pytest.mark.parametrize("recipe, mimic, root, removed, gone, row", [
    ("kits", mimic_kits, ".", "case_00002/imaging.nii.gz", {"case_00002"},
     SkippedCase("case_00002", "no case_00002/imaging.nii.gz")),
    ("autopet_ct", mimic_autopet, ".", f"PETCT_0af7ffe12a/{_STUDY}/CT.nii.gz", {"PETCT_0af7ffe12a_1"},
     SkippedCase("PETCT_0af7ffe12a_1", f"no PETCT_0af7ffe12a/{_STUDY}/CT.nii.gz")),
    ("totalseg_ct", mimic_totalseg, "ct", "s0001/ct.nii.gz", {"s0001"}, SkippedCase("s0001", "no s0001/ct.nii.gz")),
    ("totalseg_mr", mimic_totalseg, "mr", "s0003/mri.nii.gz", {"s0003"}, None),  # the only case: listing stops
    ("brats18_t2", mimic_brats18, ".", f"LGG/{_SUBJECT}/{_SUBJECT}_seg.nii.gz", {_SUBJECT},
     SkippedCase(_SUBJECT, f"no LGG/{_SUBJECT}/{_SUBJECT}_seg.nii.gz")),
    ("structseg_thoracic_oar", mimic_structseg, "Thoracic_OAR", "7/data.nii.gz", {"7"},
     SkippedCase("7", "no 7/data.nii.gz, 7/data.nii")),
    ("mnm", mimic_mnm, ".", "Validation/A1D0Q7/A1D0Q7_sa.nii.gz", {"A1D0Q7_0", "A1D0Q7_1"},
     SkippedCase("A1D0Q7", "no Validation/A1D0Q7/A1D0Q7_sa.nii.gz")),
])
def test_a_case_folder_missing_its_file_is_named_and_the_others_listed(tmp_path, recipe, mimic, root, removed, gone, row):
    mimic.write(tmp_path)
    spec = {"recipe": recipe, "root": str(tmp_path / root)}
    complete = list_dataset(spec)
    assert complete.skipped == []  # the mimic's stray files and folders are no cases, so no rows
    (tmp_path / root / removed).unlink()
    if row is None:
        with pytest.raises(ValueError, match=rf"no cases found .*\(1 case folder\(s\) left out, e\.g\. s0003: no s0003/mri\.nii\.gz\)"):
            list_dataset(spec)
        return
    listing = list_dataset(spec)
    ids = {case.case_id for case in complete.cases}
    assert gone <= ids and {case.case_id for case in listing.cases} == ids - gone
    assert listing.skipped == [row]
