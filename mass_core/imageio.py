"""Reading scans of any supported format through SimpleITK.

Supported: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha,
.mhd) and DICOM series (a folder holding one series). Every failure becomes a
:class:`~mass_core.errors.CaseError` naming the case, not a SimpleITK
traceback.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from mass_core.errors import CaseError

__all__ = ["IMAGE_SUFFIXES", "read_image", "strip_image_suffix"]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def strip_image_suffix(name: str) -> str:
    """Return ``name`` without a known image suffix (``ct.nii.gz`` -> ``ct``)."""
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_image(path: str | os.PathLike, case_id: str) -> sitk.Image:
    """Read one image file or one DICOM series folder.

    Args:
        path: an image file, or a folder containing the files of one DICOM series.
        case_id: used in the error message.

    Raises:
        CaseError: the path is missing, unreadable, or a folder without exactly
            one DICOM series.
    """
    path = Path(path)
    if not path.exists():
        raise CaseError(case_id, f"file not found: {path}")
    try:
        if path.is_dir():
            return _read_dicom_series(path, case_id)
        if path.name.lower().endswith((".nii", ".nii.gz")):
            _check_nifti_data(path, case_id)
        return sitk.ReadImage(str(path))
    except CaseError:
        raise
    except RuntimeError as err:
        raise CaseError(case_id, f"unreadable or corrupt image {path}: {_itk_reason(str(err))}") from None


def _check_nifti_data(path: Path, case_id: str) -> None:
    # ITK's NIfTI reader silently fills a truncated file's missing voxels
    # with zeros and turns NaN voxels into 0. nibabel reads the whole data
    # block as stored and raises on truncation, so neither a cut-off download
    # nor NaN voxels can pass as a valid scan.
    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as err:
        reason = str(err).splitlines()[0]
        raise CaseError(case_id, f"unreadable or corrupt image {path}: {reason}") from None
    if np.issubdtype(data.dtype, np.floating):
        bad = int(data.size - np.isfinite(data).sum())
        if bad:
            raise CaseError(case_id, f"image has {bad} NaN or infinite voxels")


def _itk_reason(message: str) -> str:
    """The one line of an ITK exception that says what went wrong.

    SimpleITK messages span several lines of source locations; the user needs
    the text after ``ERROR:`` (for example "Zero-valued spacing is not
    supported").
    """
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if "ERROR" in line:
            tail = line.split("ERROR:", 1)[-1].split("):", 1)[-1].strip()
            if tail:
                return tail
            if index + 1 < len(lines):
                return lines[index + 1]
    return "SimpleITK could not read it"


def _read_dicom_series(folder: Path, case_id: str) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise CaseError(case_id, f"no DICOM series found in folder {folder}")
    if len(series) > 1:
        raise CaseError(case_id, f"folder {folder} holds {len(series)} DICOM series; give one folder per series")
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series[0]))
    return reader.Execute()
