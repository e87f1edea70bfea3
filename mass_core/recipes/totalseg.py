"""TotalSegmentator CT (v2) and MR datasets: one binary mask file per structure.

The CT release (https://doi.org/10.5281/zenodo.6802613, v2: 1228 subjects,
117 structures) holds ``s0000/ct.nii.gz`` with ``s0000/segmentations/<structure>.nii.gz``
and a ``meta.csv``; the MR release (https://doi.org/10.5281/zenodo.11367004)
is laid out alike with ``mri.nii.gz`` (50 structures). Point ``root`` at the
folder holding the ``sNNNN`` folders. Each case's masks are merged into one
label map (:attr:`~mass_core.datasets.CaseSource.label_parts`), class ids
in the order of TotalSegmentator's own class maps (``total`` and
``total_mr`` in ``totalsegmentator/map_to_binary.py``), so that our label
maps and TotalSegmentator's predictions share ids. A case lacking a
structure's file just lacks that class; files of structures outside the
table are not read (as in the official MASS code).

Pitfall of the official code, not repeated: its class table
(``dataset_lab_map``) lists 92 CT and 46 MR ids while it merges 117 and 50
structures (and in another order than TotalSegmentator's); here every
merged id is in ``classes``.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

from mass_core.datasets import CaseSource, Listing
from mass_core.recipes.recipe import Recipe, missing

__all__ = ["CT_STRUCTURES", "MR_STRUCTURES", "RECIPES", "cases"]

# TotalSegmentator v2 class map "total": class id = position + 1 (checked against class_map in
# wasserth/TotalSegmentator totalsegmentator/map_to_binary.py at 0e65a448, whose
# resources/convert_dataset_to_nnunet.py reads the CT release's masks by these names).
CT_STRUCTURES = (
    'spleen', 'kidney_right', 'kidney_left', 'gallbladder', 'liver', 'stomach', 'pancreas', 'adrenal_gland_right',
    'adrenal_gland_left', 'lung_upper_lobe_left', 'lung_lower_lobe_left', 'lung_upper_lobe_right',
    'lung_middle_lobe_right', 'lung_lower_lobe_right', 'esophagus', 'trachea', 'thyroid_gland', 'small_bowel',
    'duodenum', 'colon', 'urinary_bladder', 'prostate', 'kidney_cyst_left', 'kidney_cyst_right', 'sacrum',
    'vertebrae_S1', 'vertebrae_L5', 'vertebrae_L4', 'vertebrae_L3', 'vertebrae_L2', 'vertebrae_L1', 'vertebrae_T12',
    'vertebrae_T11', 'vertebrae_T10', 'vertebrae_T9', 'vertebrae_T8', 'vertebrae_T7', 'vertebrae_T6',
    'vertebrae_T5', 'vertebrae_T4', 'vertebrae_T3', 'vertebrae_T2', 'vertebrae_T1', 'vertebrae_C7', 'vertebrae_C6',
    'vertebrae_C5', 'vertebrae_C4', 'vertebrae_C3', 'vertebrae_C2', 'vertebrae_C1', 'heart', 'aorta',
    'pulmonary_vein', 'brachiocephalic_trunk', 'subclavian_artery_right', 'subclavian_artery_left',
    'common_carotid_artery_right', 'common_carotid_artery_left', 'brachiocephalic_vein_left',
    'brachiocephalic_vein_right', 'atrial_appendage_left', 'superior_vena_cava', 'inferior_vena_cava',
    'portal_vein_and_splenic_vein', 'iliac_artery_left', 'iliac_artery_right', 'iliac_vena_left',
    'iliac_vena_right', 'humerus_left', 'humerus_right', 'scapula_left', 'scapula_right', 'clavicula_left',
    'clavicula_right', 'femur_left', 'femur_right', 'hip_left', 'hip_right', 'spinal_cord', 'gluteus_maximus_left',
    'gluteus_maximus_right', 'gluteus_medius_left', 'gluteus_medius_right', 'gluteus_minimus_left',
    'gluteus_minimus_right', 'autochthon_left', 'autochthon_right', 'iliopsoas_left', 'iliopsoas_right', 'brain',
    'skull', 'rib_left_1', 'rib_left_2', 'rib_left_3', 'rib_left_4', 'rib_left_5', 'rib_left_6', 'rib_left_7',
    'rib_left_8', 'rib_left_9', 'rib_left_10', 'rib_left_11', 'rib_left_12', 'rib_right_1', 'rib_right_2',
    'rib_right_3', 'rib_right_4', 'rib_right_5', 'rib_right_6', 'rib_right_7', 'rib_right_8', 'rib_right_9',
    'rib_right_10', 'rib_right_11', 'rib_right_12', 'sternum', 'costal_cartilages',
)
# TotalSegmentator class map "total_mr": class id = position + 1 (same file and commit).
MR_STRUCTURES = (
    'spleen', 'kidney_right', 'kidney_left', 'gallbladder', 'liver', 'stomach', 'pancreas', 'adrenal_gland_right',
    'adrenal_gland_left', 'lung_left', 'lung_right', 'esophagus', 'small_bowel', 'duodenum', 'colon',
    'urinary_bladder', 'prostate', 'sacrum', 'vertebrae', 'intervertebral_discs', 'spinal_cord', 'heart', 'aorta',
    'inferior_vena_cava', 'portal_vein_and_splenic_vein', 'iliac_artery_left', 'iliac_artery_right',
    'iliac_vena_left', 'iliac_vena_right', 'humerus_left', 'humerus_right', 'scapula_left', 'scapula_right',
    'clavicula_left', 'clavicula_right', 'femur_left', 'femur_right', 'hip_left', 'hip_right',
    'gluteus_maximus_left', 'gluteus_maximus_right', 'gluteus_medius_left', 'gluteus_medius_right',
    'gluteus_minimus_left', 'gluteus_minimus_right', 'autochthon_left', 'autochthon_right', 'iliopsoas_left',
    'iliopsoas_right', 'brain',
)
_MASK_SUFFIX = ".nii.gz"


def cases(root: Path, image_name: str, modality: str, structures: tuple[str, ...]) -> Listing:
    """One case per ``sNNNN`` folder holding ``image_name``; its structure masks become label parts.

    A folder without ``image_name`` is left out and named in the listing.

    Raises:
        ValueError: a case's ``segmentations`` folder holds masks, but none of
            a structure in the table (another release's naming): every case
            would lose its labels, so listing stops rather than skip them.
    """
    listing = Listing([])
    for folder in sorted(path for path in root.glob("s*") if path.is_dir()):
        if not (folder / image_name).is_file():
            listing.skipped.append(missing(folder.name, root, folder / image_name))
            continue
        masks = folder / "segmentations"
        present = {entry.name for entry in os.scandir(masks)} if masks.is_dir() else set()
        parts = tuple((class_id, masks / f"{name}{_MASK_SUFFIX}")
                      for class_id, name in enumerate(structures, start=1) if f"{name}{_MASK_SUFFIX}" in present)
        unknown = sorted(name for name in present if name.endswith(_MASK_SUFFIX))
        if not parts and unknown:
            raise ValueError(f"case {folder.name!r}: none of the {len(unknown)} mask files in {masks} is a "
                             f"TotalSegmentator {modality} structure (found {', '.join(unknown[:3])}"
                             f"{', ...' if len(unknown) > 3 else ''}; expected the v2 class names, e.g. "
                             f"{', '.join(name + _MASK_SUFFIX for name in structures[:3])}); "
                             "this recipe reads the release's v2 naming")
        listing.cases.append(CaseSource(folder.name, folder / image_name, None, modality, label_parts=parts))
    return listing


def _recipe(image_name: str, modality: str, structures: tuple[str, ...]) -> Recipe:
    return Recipe(
        layout=f"s0000/{image_name} with s0000/segmentations/<structure>.nii.gz (the unpacked release)",
        cases=partial(cases, image_name=image_name, modality=modality, structures=structures),
        classes=dict(enumerate(structures, start=1)),
    )


RECIPES: dict[str, Recipe] = {
    "totalseg_ct": _recipe("ct.nii.gz", "CT", CT_STRUCTURES),
    "totalseg_mr": _recipe("mri.nii.gz", "MR", MR_STRUCTURES),
}
