"""Reading scans of any supported format through SimpleITK.

Supported: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha,
.mhd) and DICOM series (a folder holding one series). Every failure becomes a
:class:`~mass_core.errors.CaseError` naming the case, not a SimpleITK
traceback.
"""

from __future__ import annotations

import os
import re
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
    supported"). Where that text only announces details ("Read: Error
    reading x.nrrd:"), the reason is the last line below it: NRRD's teem
    library lists its calls outermost first, as ``[nrrd] function: text``,
    so the last one is the root cause.
    """
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if "ERROR" in line:
            tail = line.split("ERROR:", 1)[-1].split("):", 1)[-1].strip()
            details = lines[index + 1 :]
            if details and (not tail or tail.endswith(":")):
                return re.sub(r"^\[\w+\] \w+: ", "", details[-1])
            if tail:
                return tail
    return "SimpleITK could not read it"


def _read_dicom_series(folder: Path, case_id: str) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise CaseError(case_id, f"no DICOM series found in folder {folder}")
    if len(series) > 1:
        raise CaseError(case_id, f"folder {folder} holds {len(series)} DICOM series; give one folder per series")
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    _check_slice_spacing(files, case_id)
    reader.SetFileNames(files)
    return reader.Execute()


# Slice gaps may differ from the series' median gap by 1 % of it (at least
# 0.01 mm): enough for positions written as rounded decimal strings, far
# below the 100 % of a missing or doubled slice.
_SLICE_GAP_RTOL = 0.01
_SLICE_GAP_ATOL_MM = 0.01


def _slice_position(header: sitk.ImageFileReader, name: str, case_id: str) -> float:
    """Position of one slice along its normal: ImagePositionPatient projected on the cross product of ImageOrientationPatient's rows."""
    tags = {"0020|0032": "ImagePositionPatient", "0020|0037": "ImageOrientationPatient"}
    for tag, keyword in tags.items():
        if not header.HasMetaDataKey(tag):
            raise CaseError(case_id, f"DICOM file {Path(name).name} has no {keyword} ({tag.replace('|', ',')}); its slice position is unknown")
    try:
        position = np.array(header.GetMetaData("0020|0032").split("\\"), float)
        orientation = np.array(header.GetMetaData("0020|0037").split("\\"), float)
    except ValueError:
        position = orientation = np.empty(0)
    if position.shape != (3,) or orientation.shape != (6,):
        raise CaseError(case_id, f"DICOM file {Path(name).name} has a malformed ImagePositionPatient or ImageOrientationPatient")
    return float(position @ np.cross(orientation[:3], orientation[3:]))


def _check_slice_spacing(files: tuple[str, ...], case_id: str) -> None:
    """Reject a series whose slices are not evenly spaced along the slice normal.

    ITK spaces a series' slices evenly between the first and the last,
    whatever their true positions, and only prints a warning; a missing slice
    would shift every slice near the gap by up to half a slice. Such a series
    is rejected rather than resampled from the true positions: the gap holds
    no data, so interpolating across it would invent anatomy.
    """
    if len(files) < 3:
        return
    header = sitk.ImageFileReader()
    positions = []
    for name in files:
        header.SetFileName(name)
        header.ReadImageInformation()
        positions.append(_slice_position(header, name, case_id))
    order = np.argsort(positions)
    gaps = np.diff(np.asarray(positions)[order])
    expected = float(np.median(gaps))
    error = np.abs(gaps - expected)
    worst = int(error.argmax())
    if error[worst] <= max(_SLICE_GAP_RTOL * expected, _SLICE_GAP_ATOL_MM):
        return
    hint = "a slice is probably missing" if gaps[worst] > expected else "slices overlap or are duplicated"
    first, second = (Path(files[i]).name for i in order[worst : worst + 2])
    raise CaseError(case_id, f"DICOM series has non-uniform slice spacing: gap of {gaps[worst]:.3g} mm between {first} "
                             f"and {second} (expected {expected:.3g} mm); {hint}")
