"""Deterministic CT-like abdominal phantoms: the pipeline's embedded default dataset.

Each case is a 3D volume in Hounsfield units with a multi-label ground truth
and a per-case classification label (lesion present or not), generated from
``(seed, case index, parameters)`` alone, so that the same case has the same
bytes however many cases are generated and in whichever order.

Anatomy (scaled to the field of view, see :class:`PhantomParams`): air, a
trunk whose cross-section varies along z, subcutaneous fat, a muscle wall,
visceral fat and bowel loops with gas, lung bases above a domed diaphragm,
heart, ribs, paraspinal muscles, and the labeled structures of :data:`LABELS`:
a two-lobed liver with vessels, a crescent spleen, two kidneys (cortex,
medulla, hypodense pelvis), a contrast-filled aorta (next to an unlabeled
inferior vena cava), and a vertebral column (cortical shell, cancellous
interior, posterior elements) separated by discs. About
``lesion_probability`` of the cases carry 1-3 hypo- or hyperdense lesions in
the liver or a kidney. Shapes are deformed ellipsoids (low-frequency random
fields perturb their distance fields); intensities get per-case tissue means,
correlated textures, a slight blur and correlated noise, so that organs
overlap in intensity and cannot be told apart by thresholds alone.

Orientation: the images are written with SimpleITK's identity direction,
i.e. in LPS. Array index ``[i, j, k]`` follows the image's own axes: ``i``
grows towards the patient's Left, ``j`` towards Posterior, ``k`` towards
Superior. The liver therefore lies at small ``i`` (patient right), the spleen
at large ``i``. The standardize stage reorients to RAS.

Command line::

    python -m mass_core.phantom --out resources/phantom --n-cases 24
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.transform import Rotation
from threadpoolctl import threadpool_limits

from mass_core import __version__
from mass_core.arrays import largest_component
from mass_core.atomic import uncommit, write_json, write_text, write_with

__all__ = [
    "LABELS",
    "PhantomCase",
    "PhantomParams",
    "case_ids",
    "main",
    "make_phantom",
    "write_case",
    "write_dataset",
]

LABELS: dict[int, str] = {
    0: "background",
    1: "liver",
    2: "spleen",
    3: "left_kidney",
    4: "right_kidney",
    5: "aorta",
    6: "spine",
    7: "lesion",
}
"""Class id -> name of the ground-truth label maps; a lesion overrides its host organ."""

MAX_CASES = 1000  # case ids have three digits

# Tissue intensity (mean, per-case standard deviation of the mean) in HU.
# Liver, spleen, kidney, muscle and soft tissue are deliberately close, so
# that with texture and noise their intensity ranges overlap.
_TISSUE_HU: dict[str, tuple[float, float]] = {
    "air": (-1000.0, 0.0),
    "fat": (-100.0, 8.0),
    "muscle": (50.0, 5.0),
    "soft": (35.0, 5.0),
    "bowel": (20.0, 6.0),
    "gas": (-950.0, 20.0),
    "lung": (-850.0, 20.0),
    "heart": (110.0, 15.0),
    "liver": (60.0, 6.0),
    "hepatic_vessel": (150.0, 15.0),
    "spleen": (50.0, 5.0),
    "renal_cortex": (55.0, 6.0),
    "renal_medulla": (25.0, 5.0),
    "renal_pelvis": (0.0, 5.0),
    "aorta": (180.0, 20.0),
    "ivc": (120.0, 15.0),
    "bone_shell": (700.0, 50.0),
    "bone_marrow": (250.0, 30.0),
    "rib": (450.0, 50.0),
    "disc": (80.0, 8.0),
    "csf": (15.0, 4.0),
}

_EVERYWHERE = (slice(None),) * 3  # index box of the whole grid

# Independent random streams per case, so that changing one aspect (say the
# lesion probability or the noise level) leaves the others untouched.
_ANATOMY, _LESIONS, _INTENSITY, _NOISE = range(4)


@dataclass(frozen=True)
class PhantomParams:
    """Generator settings shared by all cases of a phantom dataset.

    Anatomy is scaled to the field of view: lengths are defined in units of
    ``L = min(shape * spacing_mm)`` (120 mm by default, a small trunk), so a
    coarser grid over the same field of view gives the same anatomy.

    Args:
        shape: volume size ``(X, Y, Z)`` in voxels, each at least 16.
        spacing_mm: voxel size ``(X, Y, Z)`` in mm, each positive.
        lesion_probability: probability in [0, 1] that a case has lesions.
        noise_hu: standard deviation of the image noise in HU (correlated in-plane over ~1 voxel, as in
            reconstructed CT); 0 for none.
        seed: non-negative dataset seed.

    Example:
        ``PhantomParams()`` gives 96 x 96 x 64 voxels of 1.25 x 1.25 x 2.0 mm,
        a 120 x 120 x 128 mm field of view.
    """

    shape: tuple[int, int, int] = (96, 96, 64)
    spacing_mm: tuple[float, float, float] = (1.25, 1.25, 2.0)
    lesion_probability: float = 0.5
    noise_hu: float = 20.0
    seed: int = 0

    def __post_init__(self) -> None:
        shape = tuple(self.shape)
        if len(shape) != 3 or not all(_is_int(n) and n >= 16 for n in shape):
            raise ValueError(f"shape must be three integers >= 16, got {self.shape!r}")
        spacing = tuple(self.spacing_mm)
        if len(spacing) != 3 or not all(_is_real(s) and math.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"spacing_mm must be three positive numbers, got {self.spacing_mm!r}")
        if not (_is_real(self.lesion_probability) and 0.0 <= self.lesion_probability <= 1.0):
            raise ValueError(f"lesion_probability must be in [0, 1], got {self.lesion_probability!r}")
        if not (_is_real(self.noise_hu) and math.isfinite(self.noise_hu) and self.noise_hu >= 0):
            raise ValueError(f"noise_hu must be a finite number >= 0, got {self.noise_hu!r}")
        if not (_is_int(self.seed) and self.seed >= 0):
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        # Normalise lists and numpy scalars so that equal settings compare and serialise equal.
        object.__setattr__(self, "shape", tuple(int(n) for n in shape))
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in spacing))
        object.__setattr__(self, "lesion_probability", float(self.lesion_probability))
        object.__setattr__(self, "noise_hu", float(self.noise_hu))
        object.__setattr__(self, "seed", int(self.seed))


@dataclass(frozen=True, eq=False)
class PhantomCase:
    """One generated case; arrays are indexed ``[i, j, k]`` along the image axes (LPS).

    Args:
        index: case index within the dataset.
        image_hu: int16 ``(X, Y, Z)`` CT intensities in HU.
        label: uint8 ``(X, Y, Z)`` ground truth with the class ids of :data:`LABELS`.
        class_label: 1 if the case has at least one lesion, else 0.
        n_lesions: number of lesions drawn (each has at least one voxel).
        spacing_mm: voxel size ``(X, Y, Z)`` in mm.
        origin_mm: physical LPS position (mm) of voxel ``[0, 0, 0]``.
        direction: SimpleITK direction cosines (row-major 3 x 3); identity = LPS.
    """

    index: int
    image_hu: np.ndarray
    label: np.ndarray
    class_label: int
    n_lesions: int
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def case_ids(n_cases: int) -> list[str]:
    """Case ids of a phantom dataset: ``['phantom_000', 'phantom_001', ...]``.

    Raises:
        ValueError: ``n_cases`` is not an integer in [1, 1000].
    """
    if not (_is_int(n_cases) and 1 <= n_cases <= MAX_CASES):
        raise ValueError(f"n_cases must be an integer in [1, {MAX_CASES}], got {n_cases!r}")
    return [f"phantom_{i:03d}" for i in range(n_cases)]


def make_phantom(index: int, params: PhantomParams) -> PhantomCase:
    """Generate case ``index`` of the dataset described by ``params``.

    The result depends on ``(params, index)`` only: each case draws from its
    own random generators seeded with ``[params.seed, index, stream]``.

    Args:
        index: case index, 0 <= index < 1000.
        params: generator settings.

    Returns:
        The case; ``image_hu`` and ``label`` have shape ``params.shape``.

    Example:
        >>> case = make_phantom(3, PhantomParams())
        >>> case.image_hu.shape, case.image_hu.dtype, case.label.dtype
        ((96, 96, 64), dtype('int16'), dtype('uint8'))
    """
    if not (_is_int(index) and 0 <= index < MAX_CASES):
        raise ValueError(f"index must be an integer in [0, {MAX_CASES}), got {index!r}")
    rngs = [np.random.default_rng([params.seed, int(index), stream]) for stream in range(4)]
    spacing = np.asarray(params.spacing_mm)
    shape = np.asarray(params.shape)
    origin = -(shape - 1) / 2.0 * spacing
    anatomy = _Anatomy(params, origin, rngs[_ANATOMY], rngs[_INTENSITY])
    n_lesions = anatomy.add_lesions(rngs[_LESIONS], params.lesion_probability)
    image = anatomy.render(params.noise_hu, rngs[_NOISE])
    label = anatomy.label
    return PhantomCase(
        index=int(index),
        image_hu=image,
        label=label,
        class_label=int(bool((label == 7).any())),
        n_lesions=n_lesions,
        spacing_mm=params.spacing_mm,
        origin_mm=tuple(float(v) for v in origin),
    )


def write_case(case: PhantomCase, root: str | os.PathLike, case_id: str) -> None:
    """Write ``<root>/images/<case_id>.nii.gz`` (int16 HU) and ``<root>/labels/<case_id>.nii.gz`` (uint8).

    Both files carry the case's spacing, origin and direction; each is
    written atomically.
    """
    if not case_id or case_id != Path(case_id).name or case_id.startswith("."):
        raise ValueError(f"case_id must be a plain file name, got {case_id!r}")
    root = Path(root)
    _write_nifti(case.image_hu, case, root / "images" / f"{case_id}.nii.gz")
    _write_nifti(case.label, case, root / "labels" / f"{case_id}.nii.gz")


def write_dataset(root: str | os.PathLike, n_cases: int, params: PhantomParams) -> list[str]:
    """Generate and write a phantom dataset in the ``folder`` layout.

    Writes ``images/``, ``labels/``, ``classes.csv`` (``case_id,class_label``)
    and, last, ``dataset.json`` (name, modality, label names, case count and
    generator settings).

    Returns:
        The case ids, in order.
    """
    root = Path(root)
    # dataset.json marks a finished set: an earlier one goes before any case is rewritten.
    uncommit(root, "dataset.json", ["classes.csv"])
    ids = case_ids(n_cases)
    rows = ["case_id,class_label"]
    for index, case_id in enumerate(ids):
        case = make_phantom(index, params)
        write_case(case, root, case_id)
        rows.append(f"{case_id},{case.class_label}")
    write_text(root / "classes.csv", "\n".join(rows) + "\n")
    write_json(
        root / "dataset.json",
        {
            "name": "phantom",
            "description": "CT-like abdominal phantoms generated by mass_core.phantom",
            "modality": "CT",
            "labels": {str(k): v for k, v in LABELS.items()},
            "class_labels": {"0": "no lesion", "1": "lesion"},
            "n_cases": n_cases,
            "case_ids": ids,
            "orientation": "LPS",
            "generator": {
                "module": "mass_core.phantom",
                "version": __version__,
                "params": dataclasses.asdict(params),
            },
        },
    )
    return ids


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m mass_core.phantom --out DIR [--n-cases N] ...``."""
    default = PhantomParams()
    parser = argparse.ArgumentParser(prog="python -m mass_core.phantom", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    parser.add_argument("--n-cases", type=int, default=24, help="number of cases (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=default.seed, help="dataset seed (default: %(default)s)")
    parser.add_argument("--shape", type=int, nargs=3, default=default.shape, metavar=("X", "Y", "Z"),
                        help="volume size in voxels (default: %(default)s)")
    parser.add_argument("--spacing", type=float, nargs=3, default=default.spacing_mm, metavar=("SX", "SY", "SZ"),
                        help="voxel size in mm (default: %(default)s)")
    parser.add_argument("--lesion-probability", type=float, default=default.lesion_probability,
                        help="probability that a case has lesions (default: %(default)s)")
    parser.add_argument("--noise-hu", type=float, default=default.noise_hu,
                        help="image noise standard deviation in HU (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        params = PhantomParams(shape=tuple(args.shape), spacing_mm=tuple(args.spacing),
                               lesion_probability=args.lesion_probability, noise_hu=args.noise_hu, seed=args.seed)
        case_ids(args.n_cases)
    except ValueError as err:
        parser.error(str(err))
    ids = write_dataset(args.out, args.n_cases, params)
    print(f"wrote {len(ids)} phantom cases to {args.out}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- internals


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _write_nifti(array: np.ndarray, case: PhantomCase, path: Path) -> None:
    # SimpleITK arrays are (z, y, x); ours are (x, y, z).
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing(case.spacing_mm)
    image.SetOrigin(case.origin_mm)
    image.SetDirection(case.direction)

    write_with(path, lambda tmp: sitk.WriteImage(image, str(tmp), useCompression=True))


def _rotation(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rotation matrix Rz(yaw) @ Ry(pitch) @ Rx(roll), angles in radians."""
    return Rotation.from_euler("ZYX", [yaw, pitch, roll]).as_matrix()


def _smooth_noise(rng: np.random.Generator, axes: Sequence[np.ndarray], half_widths: Sequence[float],
                  length: float, n: int) -> np.ndarray:
    """``n`` random fields with unit variance and Gaussian correlation, shape ``(n, X, Y, Z)``.

    Each field is a sum of Gaussian bumps of width ``length`` on a control grid
    of step ``length`` with standard-normal weights, evaluated separably (three
    small matrix products) at the voxel centres ``axes``. The control grid is
    centred on 0 and covers ``[-half_widths, half_widths]`` (the field of view,
    same units as ``length``), so that the same draws give the same field on a
    finer or coarser sampling of the same field of view.
    """
    bases = []
    for coords, half in zip(axes, half_widths):
        m = math.ceil(round(half / length, 6)) + 2
        centres = length * np.arange(-m, m + 1)
        basis = np.exp(-0.5 * ((coords[:, None] - centres[None, :]) / length) ** 2)
        basis /= np.sqrt((basis**2).sum(axis=1, keepdims=True))  # unit variance everywhere
        bases.append(basis.astype(np.float32))
    bx, by, bz = bases
    coef = rng.standard_normal((n, bx.shape[1], by.shape[1], bz.shape[1]), dtype=np.float32)
    out = np.empty((n, len(axes[0]), len(axes[1]) * len(axes[2])), dtype=np.float32)
    # The products are small: BLAS threads only add overhead, and on a loaded
    # machine they make the generator several times slower.
    with threadpool_limits(limits=1, user_api="blas"):
        partial = (by @ (coef @ bz.T)).reshape(n, bx.shape[1], -1)  # (n, I, Y * Z)
        for c in range(n):  # one plain matrix product per field: numpy's broadcast matmul is far slower
            np.matmul(bx, partial[c], out=out[c])
    return out.reshape(n, len(axes[0]), len(axes[1]), len(axes[2]))


def _smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Union of two signed fields with a fillet of size ``k`` (polynomial smooth minimum)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


class _Anatomy:
    """Builds one case: tissue intensities (float HU) and labels on the image grid.

    Geometry lives in the *patient frame*: LPS axes (x to patient left, y to
    posterior, z to superior) in units of ``L`` (the shortest side of the field
    of view), centred on the volume up to a random shift and small rotation.
    Structures are computed inside index boxes that bound them, which keeps a
    case well under a second.
    """

    def __init__(self, params: PhantomParams, origin: np.ndarray,
                 rng: np.random.Generator, tex_rng: np.random.Generator) -> None:
        self.shape = params.shape
        self.spacing = np.asarray(params.spacing_mm)
        self.origin = origin
        self.scale_mm = float(np.min(np.asarray(params.shape) * self.spacing))
        axes = [(origin[a] + self.spacing[a] * np.arange(params.shape[a])) / self.scale_mm for a in range(3)]
        half_fov = [params.shape[a] * self.spacing[a] / 2 / self.scale_mm for a in range(3)]
        self.rng = rng
        self.hu = np.full(params.shape, _TISSUE_HU["air"][0], dtype=np.float32)
        self.label = np.zeros(params.shape, dtype=np.uint8)

        # Whole-patient pose: small rotation and shift of the patient in the scanner;
        # image position g = rot @ p + shift for patient position p (both in L units).
        self.rot = _rotation(*np.deg2rad(rng.uniform([-6, -3, -3], [6, 3, 3])))
        self.shift = rng.uniform([-0.03, -0.03, -0.04], [0.03, 0.03, 0.04])
        g = [(axes[0] - self.shift[0])[:, None, None], (axes[1] - self.shift[1])[None, :, None],
             (axes[2] - self.shift[2])[None, None, :]]
        self.p = tuple((self.rot[0, k] * g[0] + self.rot[1, k] * g[1] + self.rot[2, k] * g[2]).astype(np.float32)
                       for k in range(3))
        # Low-frequency fields (correlation ~15 mm at the default size) that deform the shapes.
        self.deform = _smooth_noise(rng, axes, half_fov, 0.12, 7)

        # Per-case tissue means, and textures: medium (~6 mm) and fine (~2.4 mm) fields.
        self.mean = {name: float(tex_rng.normal(mu, sd)) for name, (mu, sd) in _TISSUE_HU.items()}
        self.medium = _smooth_noise(tex_rng, axes, half_fov, 0.05, 5)
        self.fine = _smooth_noise(tex_rng, axes, half_fov, 0.02, 2)
        self.blur_mm = 0.7
        self.organ_field: dict[int, np.ndarray] = {}

        self._body()
        self._abdominal_contents()
        self._thorax()
        self._spine()
        self._vessels()
        self._kidneys()
        self._spleen()
        self._liver()
        self._ribs()

    # ------------------------------------------------------------------ helpers

    def _u(self, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))

    def _box(self, low: Sequence[float], high: Sequence[float]) -> tuple[slice, ...]:
        """Index box of the image grid that contains the patient-frame box ``[low, high]`` (L units)."""
        corners = np.array(list(itertools.product(*zip(low, high))), dtype=float)
        index = ((corners @ self.rot.T + self.shift) * self.scale_mm - self.origin) / self.spacing
        start = np.clip(np.floor(index.min(axis=0)) - 1, 0, self.shape).astype(int)
        stop = np.clip(np.ceil(index.max(axis=0)) + 2, 0, self.shape).astype(int)
        return tuple(slice(a, b) for a, b in zip(start, stop))

    def _ellipsoid_box(self, centre: Sequence[float], semi: Sequence[float], rot: np.ndarray | None,
                       margin: float) -> tuple[slice, ...]:
        """Index box of an ellipsoid grown by the factor ``margin``."""
        axes = np.eye(3) if rot is None else rot
        half = margin * np.sqrt(((axes * np.asarray(semi)[None, :]) ** 2).sum(axis=1))
        return self._box(np.asarray(centre) - half, np.asarray(centre) + half)

    def _coords(self, box: tuple[slice, ...]) -> tuple[np.ndarray, ...]:
        return tuple(pk[box] for pk in self.p)

    def _local(self, box: tuple[slice, ...], centre: Sequence[float],
               rot: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """Patient coordinates inside ``box`` relative to ``centre``, in the frame rotated by ``rot``."""
        d = [self.p[k][box] - np.float32(centre[k]) for k in range(3)]
        if rot is None:
            return tuple(d)
        r = rot.astype(np.float32)
        return tuple(r[0, k] * d[0] + r[1, k] * d[1] + r[2, k] * d[2] for k in range(3))

    @staticmethod
    def _radius(q: Sequence[np.ndarray], semi: Sequence[float]) -> np.ndarray:
        """Normalised ellipsoid radius: < 1 inside the ellipsoid with semi-axes ``semi``."""
        return np.sqrt(sum((qk / np.float32(s)) ** 2 for qk, s in zip(q, semi)))

    def _shape_noise(self, channel: int, box: tuple[slice, ...], field: np.ndarray) -> np.ndarray:
        """Deformation field ``channel`` inside ``box``, zero-mean over the shape ``field < 0``.

        Added to a signed shape field it makes the outline wavy without
        growing or shrinking the shape as a whole: size varies through the
        drawn radii alone.
        """
        noise = self.deform[channel][box]
        inside = field < 0
        return noise - noise[inside].mean() if inside.any() else noise

    def _full(self, box: tuple[slice, ...], mask: np.ndarray) -> np.ndarray:
        """A boolean mask computed inside ``box``, on the whole grid."""
        out = np.zeros(self.shape, dtype=bool)
        out[box] = mask
        return out

    def _paint(self, box: tuple[slice, ...], mask: np.ndarray, tissue: str, texture: np.ndarray,
               amplitude: float, label: int | None = None) -> None:
        """Set ``mask`` (inside ``box``) to the tissue's mean plus ``amplitude`` HU of ``texture`` (unit variance)."""
        self.hu[box][mask] = self.mean[tissue] + amplitude * texture[box][mask]
        if label is not None:
            self.label[box][mask] = label

    # ------------------------------------------------------------------ anatomy

    def _body(self) -> None:
        x, y, z = self.p
        self.body_y = 0.02
        a0, b0 = 0.43 * self._u(0.92, 1.05), 0.32 * self._u(0.9, 1.07)
        ph = [float(v) for v in self.rng.uniform(0, 2 * np.pi, 2)]  # python floats keep arrays float32
        # Cross-section varies smoothly along z.
        a = a0 * (1 + 0.05 * np.sin(2 * np.pi * z / 1.2 + ph[0]))
        b = b0 * (1 + 0.05 * np.sin(2 * np.pi * z / 0.9 + ph[1]))
        yb = y - np.float32(self.body_y)
        # A superellipse of exponent 2.5 gives the flatter back and flanks of a trunk.
        tx, ty = np.abs(x / a), np.abs(yb / b)
        r = (tx * tx * np.sqrt(tx) + ty * ty * np.sqrt(ty)) ** 0.4
        r *= 1 + 0.03 * self.deform[0]
        self.body = r < 1
        # Depth below the skin along the ray from the body axis (L units).
        self.depth = np.hypot(x, yb) * (1 - r) / np.maximum(r, 1e-3)
        # Subcutaneous fat of varying thickness, never thinner than ~2.4 mm.
        self.fat_thickness = np.maximum(0.045 * self._u(0.7, 1.5) * (1 + 0.35 * self.deform[1]), np.float32(0.02))
        self.wall_depth = self.fat_thickness + 0.035 * self._u(0.85, 1.15)
        self.cavity = self.depth > self.wall_depth
        self._paint(_EVERYWHERE, self.body, "fat", self.fine[0], 6.0)
        self._paint(_EVERYWHERE, self.depth > self.fat_thickness, "muscle", self.fine[1], 5.0)
        self._paint(_EVERYWHERE, self.cavity, "soft", self.medium[0], 5.0)

    def _abdominal_contents(self) -> None:
        _, y, z = self.p
        # Visceral fat and bowel loops fill what organs leave free; organs are painted over them.
        self._paint(_EVERYWHERE, self.cavity & (self.medium[0] > 0.45), "fat", self.fine[0], 6.0)
        loops = self.cavity & (z < 0.12) & (y < 0.05) & (np.abs(self.medium[1]) < 0.3)
        self._paint(_EVERYWHERE, loops, "bowel", self.medium[2], 8.0)
        self._paint(_EVERYWHERE, loops & (self.medium[2] > 1.0), "gas", self.fine[1], 15.0)

    def _thorax(self) -> None:
        x, y, z = self.p
        # Domed diaphragm, the right dome slightly higher; organs stay below it.
        top = 0.33 + self._u(-0.05, 0.04)
        self.dome = top + np.where(x < 0, np.float32(0.02), np.float32(0.0)) \
            - 1.2 * ((np.abs(x) - 0.17) ** 2 + 0.8 * y**2)
        above = self.cavity & (z > self.dome)
        centre, semi = (0.04, -0.09, top + 0.14), (0.16, 0.13, 0.15)
        box = self._ellipsoid_box(centre, semi, None, 1.0)
        heart = self._full(box, self._radius(self._local(box, centre), semi) < 1) & above
        mediastinum = heart | ((np.abs(x) < 0.07) & (y > -0.05))
        self._paint(_EVERYWHERE, above & ~mediastinum, "lung", self.fine[0], 25.0)
        self._paint(_EVERYWHERE, heart, "heart", self.medium[3], 8.0)
        self.abdomen = self.cavity & (z < self.dome - 0.015)

    def _spine(self) -> None:
        box = self._box((-0.25, -0.05, -2.0), (0.25, 0.45, 2.0))
        x, y, z = self._coords(box)
        self.spine_y, self.spine_phase = 0.07 * self._u(0.9, 1.1), (self._u(0, 2 * np.pi), self._u(0, 2 * np.pi))
        xv, yv = self._spine_axis(z)
        rv = np.sqrt(((x - xv) / (0.065 * self._u(0.9, 1.1))) ** 2 + ((y - yv) / (0.05 * self._u(0.9, 1.1))) ** 2)
        period = 0.2 * self._u(0.93, 1.07)
        frac = np.mod((z - self._u(0.0, period)) / period, 1.0)
        disc_frac = 0.22
        disc = frac < disc_frac
        endplate = (frac < disc_frac + 0.06) | (frac > 0.94)
        vertebral_body = (rv < 1) & ~disc
        shell = vertebral_body & ((rv > 0.8) | endplate)
        # Posterior elements: arch round the canal, spinous and transverse processes.
        canal_y = yv + 0.05 + 0.026
        rc = np.hypot(x - xv, y - canal_y)
        posterior = (frac > disc_frac + 0.08) & (frac < 0.9)
        arch = (rc > 0.026) & (rc < 0.045) & (y > yv + 0.03)
        spinous = self._radius((x - xv, y - (canal_y + 0.08)), (0.013, 0.055)) < 1
        transverse = self._radius((np.abs(x - xv) - 0.06, y - (canal_y - 0.005)), (0.035, 0.012)) < 1
        elements = posterior & (arch | spinous | transverse)
        inside = self.depth[box] > self.fat_thickness[box] + 0.02  # bone stays under the back muscles
        # Paraspinal muscles in a thin fat plane either side of the spinous process.
        para = self._radius((np.abs(x - xv) - 0.078, y - (canal_y + 0.085)), (0.06, 0.065))
        self._paint(box, inside & (para < 1.12) & (y > canal_y), "fat", self.fine[0], 6.0)
        self._paint(box, inside & (para < 1), "muscle", self.fine[1], 5.0)
        self._paint(box, (rv < 1) & disc, "disc", self.fine[1], 6.0)
        self._paint(box, rc < 0.026, "csf", self.fine[0], 3.0)
        self._paint(box, inside & vertebral_body & ~shell, "bone_marrow", self.fine[0], 40.0, label=6)
        self._paint(box, inside & (shell | elements), "bone_shell", self.fine[1], 50.0, label=6)
        self.spine = self._full(box, inside & (vertebral_body | elements))

    def _spine_axis(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centre ``(x, y)`` of the vertebral bodies at height ``z``: gentle scoliosis and lordosis."""
        return (0.01 * np.sin(np.pi * z / 1.1 + self.spine_phase[1]),
                self.spine_y + 0.015 * np.sin(np.pi * z / 0.8 + self.spine_phase[0]))

    def _vessels(self) -> None:
        box = self._box((-0.2, -0.2, -2.0), (0.15, 0.1, 2.0))
        x, y, z = self._coords(box)
        radius = 0.038 * self._u(0.88, 1.12)
        spine_x, spine_y = self._spine_axis(z)
        spine_front = spine_y - 0.05
        # The aorta lies in front of the column, left of the midline; the IVC to the right.
        xa = spine_x + 0.025 + 0.008 * np.sin(np.pi * z / 0.9 + self._u(0, 2 * np.pi))
        ya = spine_front - radius - 0.008
        aorta = np.hypot(x - xa, y - ya) / radius - 1 + 0.04 * self.deform[6][box]
        ivc = self._radius((x - (-0.06 + spine_x), y - (spine_front - 0.03)),
                           (0.045 * self._u(0.85, 1.15), 0.03 * self._u(0.85, 1.15)))
        # The IVC ends in the right atrium above the diaphragm.
        ivc = self.cavity[box] & (ivc < 1) & (z < self.dome[box])
        aorta = self.body[box] & (aorta < 0)
        self._paint(box, ivc, "ivc", self.fine[1], 6.0)
        self._paint(box, aorta, "aorta", self.fine[1], 8.0, label=5)
        self.ivc, self.aorta = self._full(box, ivc), self._full(box, aorta)

    def _kidneys(self) -> None:
        self.kidney: dict[int, np.ndarray] = {}
        for side, class_id, zc in ((1, 3, -0.02), (-1, 4, -0.08)):  # the left kidney sits higher
            centre = (side * 0.2 * self._u(0.92, 1.08), 0.1 + self._u(-0.02, 0.02), zc + self._u(-0.04, 0.04))
            semi = (0.075 * self._u(0.85, 1.15), 0.055 * self._u(0.85, 1.15), 0.155 * self._u(0.85, 1.15))
            # Hilum faces antero-medially (local -x); the upper pole leans medially.
            yaw = math.atan2(math.sin(math.radians(30)), side * math.cos(math.radians(30))) \
                + math.radians(self._u(-8, 8))
            rot = _rotation(0.0, -side * math.radians(self._u(7, 17)), 0.0) @ _rotation(yaw)
            box = self._ellipsoid_box(centre, semi, rot, 1.8)  # room for the perirenal fat
            q = self._local(box, centre, rot)
            f = self._radius(q, semi) - 1
            f += 0.08 * self._shape_noise(1 + class_id, box, f)
            notch = self._radius((q[0] + semi[0], q[1], q[2]), (0.45 * semi[0], 0.5 * semi[1], 0.3 * semi[2])) - 1
            f = np.maximum(f, -notch)
            pelvis = self._radius((q[0] + 0.45 * semi[0], q[1], q[2]),
                                  (0.4 * semi[0], 0.45 * semi[1], 0.35 * semi[2])) < 1
            abdomen = self.abdomen[box]
            kidney = largest_component(abdomen & (f < 0))
            self._paint(box, abdomen & (f < 0.45) & ~(self.spine | self.aorta | self.ivc)[box], "fat",
                        self.fine[0], 6.0)
            self._paint(box, kidney, "renal_cortex", self.fine[1], 5.0, label=class_id)
            # Medullary pyramids, interrupted by cortical columns.
            self._paint(box, kidney & (f < -0.25) & (self.fine[0][box] < 0.6), "renal_medulla", self.fine[1], 4.0)
            self._paint(box, kidney & pelvis, "renal_pelvis", self.fine[1], 4.0)
            self.kidney[class_id] = self._full(box, kidney)
            self._keep_field(class_id, box, f)

    def _liver(self) -> None:
        # The right lobe lies in front of and above the right kidney, which leaves its impression on it.
        right_c = (-0.19 + self._u(-0.02, 0.02), -0.05 + self._u(-0.02, 0.02), 0.1 + self._u(-0.03, 0.03))
        right_rot = _rotation(*np.deg2rad(self.rng.uniform([-10, -5, -5], [10, 5, 5])))
        right_s = (0.17 * self._u(0.85, 1.12), 0.19 * self._u(0.85, 1.08), 0.21 * self._u(0.85, 1.15))
        left_c = (0.03 + self._u(-0.03, 0.03), -0.13 + self._u(-0.02, 0.02), 0.17 + self._u(-0.03, 0.03))
        left_rot = _rotation(np.deg2rad(self._u(-25, -5)))
        left_s = (0.17 * self._u(0.85, 1.15), 0.085 * self._u(0.85, 1.15), 0.1 * self._u(0.85, 1.15))
        boxes = [self._ellipsoid_box(c, s, r, 1.5) for c, s, r in
                 ((right_c, right_s, right_rot), (left_c, left_s, left_rot))]
        box = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(*boxes))
        right = self._radius(self._local(box, right_c, right_rot), right_s) - 1
        left = self._radius(self._local(box, left_c, left_rot), left_s) - 1
        f = _smooth_min(right, left, 0.4)
        f += 0.15 * self._shape_noise(2, box, f)
        taken = (self.ivc | self.aorta | self.spine | self.kidney[3] | self.kidney[4] | self.spleen)[box]
        liver = largest_component(self.abdomen[box] & (f < 0) & ~taken)
        self._paint(box, liver, "liver", self.medium[4], 7.0, label=1)
        # Branching vessels: tubes where two independent smooth fields are both near zero.
        vessels = liver & (np.abs(self.medium[3][box]) < 0.15) & (np.abs(self.medium[4][box]) < 0.25)
        self._paint(box, vessels, "hepatic_vessel", self.fine[1], 10.0)
        self._keep_field(1, box, f)

    def _spleen(self) -> None:
        centre = (0.26 + self._u(-0.02, 0.02), 0.03 + self._u(-0.03, 0.03), 0.14 + self._u(-0.03, 0.03))
        # Long axis along the postero-lateral wall; local +y points medially.
        yaw = math.atan2(0.89, -0.45) + math.radians(self._u(-10, 10))
        rot = _rotation(yaw, math.radians(self._u(-10, 10)), 0.0)
        semi = (0.12 * self._u(0.88, 1.12), 0.05 * self._u(0.88, 1.12), 0.13 * self._u(0.88, 1.12))
        bend = 0.7 * self._u(0.7, 1.3)  # crescent: the poles curve medially
        box = self._ellipsoid_box(centre, (semi[0], semi[1] * (1 + bend), semi[2]), rot, 1.5)
        u, v, w = (qk / np.float32(s) for qk, s in zip(self._local(box, centre, rot), semi))
        f = np.sqrt(u**2 + (v - bend * u**2) ** 2 + w**2) - 1
        f += 0.1 * self._shape_noise(3, box, f)
        taken = (self.spine | self.aorta | self.kidney[3])[box]
        spleen = largest_component(self.abdomen[box] & (f < 0) & ~taken)
        self._paint(box, spleen, "spleen", self.fine[0], 4.0, label=2)
        self.spleen = self._full(box, spleen)
        self._keep_field(2, box, f)

    def _ribs(self) -> None:
        # Only the band of the muscle wall that holds ribs is evaluated.
        band = (self.depth > self.fat_thickness + 0.004) & (self.depth < self.fat_thickness + 0.024) \
            & (self.p[2] > -0.15) & (self.label == 0)
        x, y, z = (pk[band] for pk in self.p)
        # Angle round the trunk from the back (0) to the front (pi); ribs descend steeply anteriorly.
        phi = np.arctan2(np.abs(x), y - np.float32(self.body_y))
        period = 0.17 * self._u(0.93, 1.07)
        frac = np.mod((z + 0.3 * phi / np.pi - self._u(0.0, period)) / period, 1.0)
        reach = np.where(z > 0.05, np.float32(0.82 * np.pi), np.float32(0.55 * np.pi))
        ribs = band.copy()
        ribs[band] = (frac < 0.035 / period) & (phi > 0.14 * np.pi) & (phi < reach)
        self._paint(_EVERYWHERE, ribs, "rib", self.fine[0], 40.0)

    def _keep_field(self, class_id: int, box: tuple[slice, ...], field: np.ndarray) -> None:
        """Keep an organ's signed shape field (negative inside) for placing lesions."""
        full = np.full(self.shape, np.inf, dtype=np.float32)
        full[box] = field
        self.organ_field[class_id] = full

    # ------------------------------------------------------------------ lesions and rendering

    def add_lesions(self, rng: np.random.Generator, probability: float) -> int:
        """Draw 1-3 lesions with ``probability``, each inside the liver or a kidney; return their number."""
        if not rng.random() < probability:
            return 0
        n = int(rng.integers(1, 4))
        for _ in range(n):
            in_liver = rng.random() < 0.75
            host = 1 if in_liver else (3 if rng.random() < 0.5 else 4)
            # Radii of 2.4-6 mm (liver) and 2.4-3.6 mm (kidney) at the default size: 5-12 mm across.
            radius = rng.uniform(0.02, 0.05) if in_liver else rng.uniform(0.02, 0.03)
            semi = radius * rng.uniform(0.85, 1.15, 3)
            rot = _rotation(*rng.uniform(-np.pi, np.pi, 3))
            pick, hyper = rng.random(), rng.random() < 0.3
            delta = rng.uniform(45, 90) if hyper else -rng.uniform(25, 55)
            host_mask = self.label == host
            # Centre deep inside the host, so that the lesion keeps voxels once clipped to it.
            candidates = np.flatnonzero(host_mask & (self.organ_field[host] < -0.3))
            if candidates.size == 0:
                candidates = np.flatnonzero(host_mask)
            centre_index = candidates[min(int(pick * candidates.size), candidates.size - 1)]
            centre = [float(pk.reshape(-1)[centre_index]) for pk in self.p]
            box = self._ellipsoid_box(centre, (semi.max(),) * 3, None, 1.3)
            f = self._radius(self._local(box, centre, rot), semi) - 1 + 0.05 * self.fine[1][box]
            lesion = host_mask[box] & (f < 0)
            lesion[tuple(int(i) - b.start for i, b in zip(np.unravel_index(centre_index, self.shape), box))] = True
            host_hu = self.mean["liver" if in_liver else "renal_cortex"]
            self.hu[box][lesion] = host_hu + delta + 4.0 * self.fine[0][box][lesion]
            self.label[box][lesion] = 7
        return n

    def render(self, noise_hu: float, rng: np.random.Generator) -> np.ndarray:
        """Blur (scanner resolution), add in-plane correlated noise, round to int16 HU ``(X, Y, Z)``."""
        image = ndimage.gaussian_filter(self.hu, sigma=self.blur_mm / self.spacing, mode="nearest")
        if noise_hu > 0:
            noise = rng.standard_normal(self.hu.shape, dtype=np.float32)
            noise = ndimage.gaussian_filter(noise, sigma=(0.6, 0.6, 0.0))
            image += noise * np.float32(noise_hu / float(noise.std()))
        return np.clip(np.rint(image), -1024, 3071).astype(np.int16)


if __name__ == "__main__":
    raise SystemExit(main())
