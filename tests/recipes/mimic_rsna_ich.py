"""A tiny RSNA ICH Kaggle release: single-slice DICOMs in stage_2_train/ and the per-slice label CSV.

Study ``ID_study1`` (series ``ID_series1``, 4 slices) has a subdural
haemorrhage on one slice; study ``ID_study2`` (series ``ID_series2``, 3
slices) has none. As in the release, UIDs are ``ID_`` strings, some CSV rows
are repeated, and one file (``ID_broken.dcm``) is no DICOM at all.
:func:`write` also runs the one-off regrouping the recipe reads, into the same folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from mass_core.recipes.rsna_ich_prepare import prepare

DATASETS = {"rsna_ich": "."}
# series -> (study, slice ids from head to feet)
SERIES = {"ID_series1": ("ID_study1", ("ID_0a1", "ID_0a2", "ID_0a3", "ID_0a4")),
          "ID_series2": ("ID_study2", ("ID_0b1", "ID_0b2", "ID_0b3"))}
POSITIVE_SLICE = "ID_0a3"
SUBTYPES = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any")
SLICE_SIZE = 16


def _write_slice(path: Path, slice_id: str, study: str, series: str, position: int) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = slice_id
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, slice_id
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = study, series, f"{study}_patient"
    ds.Modality, ds.InstanceNumber = "CT", position + 1
    ds.ImagePositionPatient = [-8.0, -8.0, -5.0 * position]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 5.0
    ds.Rows = ds.Columns = SLICE_SIZE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    pixels = np.full((SLICE_SIZE, SLICE_SIZE), 24, np.int16)  # air (-1000 HU) around a head
    pixels[3:-3, 3:-3] = 1064 + 3 * (np.indices((SLICE_SIZE - 6,) * 2).sum(axis=0) % 7)  # 40-58 HU
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_release(root: Path) -> None:
    """``root/stage_2_train/*.dcm`` and ``root/stage_2_train.csv``, as downloaded."""
    # The release's UIDs ("ID_...") break the UID syntax, which pydicom checks on assignment.
    saved = config.settings.reading_validation_mode, config.settings.writing_validation_mode
    config.settings.reading_validation_mode = config.settings.writing_validation_mode = config.IGNORE
    try:
        _write_release(root)
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = saved


def _write_release(root: Path) -> None:
    slices = root / "stage_2_train"
    slices.mkdir(parents=True)
    rows = ["ID,Label"]
    for series, (study, slice_ids) in SERIES.items():
        for position, slice_id in enumerate(slice_ids):
            _write_slice(slices / f"{slice_id}.dcm", slice_id, study, series, position)
            positive = {"subdural", "any"} if slice_id == POSITIVE_SLICE else set()
            rows += [f"{slice_id}_{kind},{int(kind in positive)}" for kind in SUBTYPES]
    rows += rows[1:4]  # the release repeats some rows
    (slices / "ID_broken.dcm").write_bytes(b"not a DICOM file")
    rows += [f"ID_broken_{kind},0" for kind in SUBTYPES]
    (root / "stage_2_train.csv").write_text("\n".join(rows) + "\n")


def write(root: Path) -> None:
    """The release under ``root/kaggle``, regrouped for the recipe into ``root`` (``studies/``, ``classes.csv``)."""
    write_release(root / "kaggle")
    prepare(root / "kaggle" / "stage_2_train", root / "kaggle" / "stage_2_train.csv", root)
