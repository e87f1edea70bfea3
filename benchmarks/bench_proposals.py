"""Benchmark of the propose stage on one core: segmentation speed, whole-case time, crop reads.

Volumes: the MNI152 T1 template shipped inside nilearn (1 mm, cropped and
padded to 160 x 192 x 192, normalised like the pipeline's MR branch), a
CT-like phantom of the same size at 1.5 mm, and the phantom dataset's
default case. Prints per volume: Mvoxel/s of the 3D Felzenszwalb merge per
scale, the same for scikit-image's per-slice felzenszwalb and the ratio, and
the rate of random 128^3 crop reads of the label maps (training tasks, which
count and paint proposals from the runs: ``benchmarks/bench_loader.py``).

Whole case (all scales, body mask, graph, filters, dedup, table): this tree
against ``--baseline`` (a git revision; default the code before the fast
path), each in its own process with that revision's ``mass_core``, in
alternating rounds; prints best and median Mvoxel/s beside the target, the
new/old ratio and whether both produced the same proposals. With
``--quality N``, also the proposal recall of each generator on the first N
default phantom cases (connected structures of 2 cm^3 or more).

Usage::

    NUMBA_NUM_THREADS=1 python benchmarks/bench_proposals.py [--repeats 2] [--rounds 3] [--case-only]
        [--baseline REV] [--quality 8] [--json out.json]

Timings are process CPU seconds (one thread), so that other jobs on a shared
machine count less; per-scale figures are the best of ``--repeats`` runs.
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
from skimage.segmentation import felzenszwalb  # noqa: E402

from mass_core.phantom import PhantomCase, PhantomParams, make_phantom  # noqa: E402
from mass_core.proposals.felzenszwalb3d import build_graph, segment_scales  # noqa: E402
from mass_core.proposals.generate import ProposalParams, body_mask, generate_proposals  # noqa: E402
from mass_core.proposals.store import ProposalSet, ProposalStore, ids_by_scale, write_store  # noqa: E402

SHAPE = (160, 192, 192)
CROP = 128
TARGET_MVOX_S = 3.0
# The last revision before the whole-case fast path (prefetching merge,
# small-component pass over the edges that can still join, bounding-box graph).
BASELINE = "1bd54c2"
REPO = Path(__file__).resolve().parents[1]


def _fit(array: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    # Centre-crop or zero-pad each axis to `shape`.
    out = np.zeros(shape, array.dtype)
    src, dst = [], []
    for n, m in zip(array.shape, shape):
        lo = abs(n - m) // 2
        src.append(slice(lo, lo + m) if n >= m else slice(0, n))
        dst.append(slice(0, m) if n >= m else slice(lo, lo + n))
    out[tuple(dst)] = array[tuple(src)]
    return out


def _zscore(array: np.ndarray, foreground: np.ndarray, lo: float, hi: float) -> np.ndarray:
    clipped = np.clip(array, lo, hi)
    values = clipped[foreground]
    return ((clipped - values.mean()) / values.std()).astype(np.float32)


def mni_volume() -> tuple[np.ndarray, tuple[float, float, float]]:
    """MNI152 T1 (1 mm) as a standardized MR case: clip to foreground percentiles 2..98, z-score."""
    from nilearn.datasets import load_mni152_template

    raw = _fit(np.asarray(load_mni152_template(resolution=1).dataobj, dtype=np.float32), SHAPE)
    foreground = raw > 0.1 * raw.max()
    lo, hi = np.percentile(raw[foreground], [2, 98])
    return _zscore(raw, foreground, lo, hi), (1.0, 1.0, 1.0)


def phantom_volume_of(case: PhantomCase) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A phantom case as a standardized CT case: clip to [-991, 500] HU, z-score over the body."""
    hu = case.image_hu.astype(np.float32)
    return _zscore(hu, hu > -500, -991, 500), case.spacing_mm


def best_time(fn: Callable[[], object], repeats: int) -> float:
    # CPU time of this (single-threaded) process: on a shared machine, wall
    # time measures the neighbours' load as much as this code.
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def bench_volume(name: str, image: np.ndarray, spacing: tuple[float, float, float], repeats: int) -> dict:
    params = ProposalParams()
    mvox = image.size / 1e6
    fg = body_mask(image)
    graph = build_graph(image, spacing, sigma_mm=params.sigma_mm, foreground=fg)
    per_scale = {
        k: best_time(lambda: segment_scales(graph, (k,), min_size_mm3=params.min_volume_mm3), repeats)
        for k in params.scales_mm3
    }
    t_graph = best_time(lambda: build_graph(image, spacing, sigma_mm=params.sigma_mm, foreground=fg), repeats)
    voxel_mm3 = float(np.prod(spacing))
    sigma_px = params.sigma_mm / float(np.sqrt(spacing[0] * spacing[1]))
    k_mid = params.scales_mm3[len(params.scales_mm3) // 2]

    def skimage_slices() -> None:
        for z in range(image.shape[2]):
            felzenszwalb(image[:, :, z], scale=255 * k_mid / voxel_mm3, sigma=sigma_px, min_size=20, channel_axis=None)

    t_skimage = best_time(skimage_slices, 1)
    t_slicewise = best_time(
        lambda: generate_proposals(image, spacing, ProposalParams(generator="slicewise"), name), 1
    )
    proposals = generate_proposals(image, spacing, params, name)
    reads = bench_reads(image, proposals)
    fh_scale = statistics.median(mvox / t for t in per_scale.values())
    return {
        "volume": name,
        "shape": list(image.shape),
        "spacing_mm": list(spacing),
        "foreground_fraction": float(fg.mean()),
        "n_proposals": int(len(proposals.table)),
        "fh3d_graph_s": t_graph,
        "fh3d_per_scale_s": {str(k): t for k, t in per_scale.items()},
        "fh3d_mvox_s_per_scale_median": fh_scale,
        "skimage_slices_per_scale_s": t_skimage,
        "skimage_mvox_s_per_scale": mvox / t_skimage,
        "ratio_fh3d_vs_skimage_per_scale": fh_scale / (mvox / t_skimage),
        "slicewise_case_s": t_slicewise,
        **reads,
    }


def bench_reads(image: np.ndarray, proposals: ProposalSet, n_reads: int = 60) -> dict:
    """Random crops of the label maps from the store."""
    crop = tuple(min(CROP, n) for n in image.shape)
    rng = np.random.default_rng(0)
    starts = [tuple(int(rng.integers(0, n - c + 1)) for n, c in zip(image.shape, crop)) for _ in range(n_reads)]
    boxes = [tuple(slice(s, s + c) for s, c in zip(start, crop)) for start in starts]
    with tempfile.TemporaryDirectory() as tmp:
        write_store(Path(tmp) / "case", proposals)
        size_mb = (Path(tmp) / "case" / "proposals.h5").stat().st_size / 1e6
        store = ProposalStore(Path(tmp) / "case")
        store.read_crop(boxes[0])

        def labels_only() -> None:
            for box in boxes:
                store.read_crop(box)

        t_labels = best_time(labels_only, 2)
        counts = [sum(int((c[1:] > 0).sum()) for c in store.crop_runs(box).counts()) for box in boxes[:10]]
        store.close()
    return {
        "store_mb": size_mb,
        "raw_label_maps_mb": proposals.label_maps.nbytes / 1e6,
        "crop": list(crop),
        "proposals_present_per_crop": float(np.mean(counts)),
        "reads_per_s_label_maps": n_reads / t_labels,
    }


def warm_up() -> None:
    """Numba compiles (or loads its cache) on first use; keep that out of the timings."""
    warm = phantom_volume_of(make_phantom(0, PhantomParams(shape=(24, 24, 24))))
    generate_proposals(*warm, ProposalParams(min_foreground_mm3=0), "warm-up")


def case_worker(volume: Path, repeats: int) -> None:
    """Time ``generate_proposals`` on a saved volume with whichever ``mass_core`` is on the path; print JSON."""
    warm_up()
    with np.load(volume) as data:
        image, spacing = data["image"], tuple(float(s) for s in data["spacing"])
    times = []
    for _ in range(repeats):
        start = time.process_time()
        proposals = generate_proposals(image, spacing, ProposalParams(), volume.stem)
        times.append(time.process_time() - start)
    digest = hashlib.sha256(proposals.label_maps.tobytes())
    digest.update(proposals.table.to_csv(index=False).encode())
    print(json.dumps({"times": times, "digest": digest.hexdigest(), "n_proposals": len(proposals.table)}))


def _baseline_tree(revision: str, into: Path) -> Path:
    # `git archive` of the baseline's package: its own numba cache lands there too.
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision, "mass_core"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def compare_whole_case(
    volumes: dict[str, tuple[np.ndarray, tuple[float, float, float]]], baseline: str, rounds: int, repeats: int
) -> list[dict]:
    """Whole-case CPU time of this tree ("new") and of ``baseline`` ("old"), alternating by round."""
    with tempfile.TemporaryDirectory() as tmp:
        roots = {"new": REPO, "old": _baseline_tree(baseline, Path(tmp) / "baseline")}
        paths = {}
        for name, (image, spacing) in volumes.items():
            paths[name] = Path(tmp) / f"{name}.npz"
            np.savez(paths[name], image=image, spacing=np.array(spacing))
        runs: dict[tuple[str, str], list[dict]] = {}
        for _ in range(rounds):
            for version, root in roots.items():
                for name, path in paths.items():
                    env = {**os.environ, "PYTHONPATH": str(root)}
                    out = subprocess.run(
                        [sys.executable, __file__, "--case-worker", str(path), "--repeats", str(repeats)],
                        check=True,
                        capture_output=True,
                        text=True,
                        env=env,
                        cwd=tmp,
                    ).stdout
                    runs.setdefault((name, version), []).append(json.loads(out.strip().splitlines()[-1]))
    rows = []
    for name, (image, _) in volumes.items():
        row: dict = {"volume": name, "mvox": image.size / 1e6}
        for version in roots:
            times = [t for run in runs[(name, version)] for t in run["times"]]
            row[version] = {
                "seconds_best": min(times),
                "seconds_median": statistics.median(times),
                "mvox_s_best": image.size / 1e6 / min(times),
                "mvox_s_median": image.size / 1e6 / statistics.median(times),
                "n_proposals": runs[(name, version)][0]["n_proposals"],
            }
        digests = {run["digest"] for version in roots for run in runs[(name, version)]}
        row["identical"] = len(digests) == 1
        row["ratio_best"] = row["new"]["mvox_s_best"] / row["old"]["mvox_s_best"]
        row["ratio_median"] = row["new"]["mvox_s_median"] / row["old"]["mvox_s_median"]
        rows.append(row)
    return rows


def bench_quality(n_cases: int) -> list[dict]:
    """Proposal recall of each generator (and linking rule) on the default phantom's first cases."""
    import pandas as pd

    from mass_core.proposals.recall import best_dice

    settings = {
        "fh3d": ProposalParams(),
        "slicewise iou": ProposalParams(generator="slicewise"),
        "slicewise overlap": ProposalParams(generator="slicewise", link="overlap"),
    }
    cases = []
    for index in range(n_cases):
        case = make_phantom(index, PhantomParams())
        image, spacing = phantom_volume_of(case)
        cases.append((image, case.label, spacing))
    rows = []
    for name, params in settings.items():
        frames, seconds = [], 0.0
        for index, (image, label, spacing) in enumerate(cases):
            start = time.process_time()
            proposals = generate_proposals(image, spacing, params, f"phantom_{index}")
            seconds += time.process_time() - start
            ids = ids_by_scale(proposals.table, len(proposals.sources))
            frames.append(
                best_dice(label, proposals.label_maps, ids, spacing, str(index), structures="component",
                          min_structure_mm3=2000.0)
            )
        organs = pd.concat(frames)
        rows.append(
            {
                "generator": name,
                "structures": len(organs),
                "mean_best_dice": float(organs["best_dice"].mean()),
                "recall_dice50": float((organs["best_dice"] >= 0.5).mean()),
                "recall_dice70": float((organs["best_dice"] >= 0.7).mean()),
                "seconds_per_case": seconds / n_cases,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating new/old rounds of the whole-case timing")
    parser.add_argument("--baseline", default=BASELINE, help="git revision the whole case is compared against")
    parser.add_argument("--case-only", action="store_true", help="only the whole-case comparison")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quality", type=int, default=0, metavar="N", help="also measure recall on N phantom cases")
    parser.add_argument("--case-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case_worker:
        case_worker(args.case_worker, args.repeats)
        return
    warm_up()
    volumes = {
        "mni152_t1": mni_volume(),
        "phantom_160x192x192_1.5mm": phantom_volume_of(
            make_phantom(0, PhantomParams(shape=SHAPE, spacing_mm=(1.5, 1.5, 1.5)))
        ),
        "phantom_default": phantom_volume_of(make_phantom(0, PhantomParams())),
    }
    print(f"NUMBA_NUM_THREADS={os.environ['NUMBA_NUM_THREADS']}, defaults {ProposalParams().to_dict()}")
    cases = compare_whole_case(volumes, args.baseline, args.rounds, args.repeats)
    print(f"whole case, CPU s of one thread, {args.rounds} rounds x {args.repeats} runs, old = {args.baseline}:")
    for c in cases:
        new, old = c["new"], c["old"]
        print(
            f"{c['volume']:>26} {c['mvox']:.2f} Mvox: new {new['mvox_s_best']:.2f} Mvox/s best "
            f"({new['seconds_best']:.2f} s), {new['mvox_s_median']:.2f} median | old {old['mvox_s_best']:.2f} best "
            f"({old['seconds_best']:.2f} s), {old['mvox_s_median']:.2f} median | new/old {c['ratio_best']:.2f}x best, "
            f"{c['ratio_median']:.2f}x median | target {TARGET_MVOX_S:g} Mvox/s: "
            f"{'met' if new['mvox_s_median'] >= TARGET_MVOX_S else 'NOT met'} (median) | "
            f"{new['n_proposals']} proposals, {'identical' if c['identical'] else 'DIFFERENT'} to old"
        )
    results = [] if args.case_only else [bench_volume(n, image, sp, args.repeats) for n, (image, sp) in volumes.items()]
    for r in results:
        print(
            f"{r['volume']:>26} {tuple(r['shape'])}: fh3d {r['fh3d_mvox_s_per_scale_median']:.2f} Mvox/s per scale "
            f"(graph {r['fh3d_graph_s']:.2f} s), {r['n_proposals']} proposals | skimage per slice "
            f"{r['skimage_mvox_s_per_scale']:.2f} Mvox/s per scale, ratio {r['ratio_fh3d_vs_skimage_per_scale']:.1f}x "
            f"(slicewise case {r['slicewise_case_s']:.1f} s) | reads {tuple(r['crop'])}: "
            f"{r['reads_per_s_label_maps']:.0f}/s label maps ({r['proposals_present_per_crop']:.0f} proposals present), "
            f"store {r['store_mb']:.1f} MB "
            f"(raw {r['raw_label_maps_mb']:.0f} MB)"
        )
    if results:
        median = statistics.median(r["fh3d_mvox_s_per_scale_median"] for r in results)
        print(f"median fh3d Mvox/s per scale over volumes: {median:.2f}")
    quality = bench_quality(args.quality) if args.quality else []
    for q in quality:
        print(
            f"{q['generator']:>18}: organ-sized structures {q['structures']}, "
            f"mean best Dice {q['mean_best_dice']:.2f}, recall@0.5 {q['recall_dice50']:.2f}, "
            f"recall@0.7 {q['recall_dice70']:.2f}, {q['seconds_per_case']:.1f} CPU s/case"
        )
    if args.json:
        args.json.write_text(json.dumps({"whole_case": cases, "speed": results, "quality": quality}, indent=2) + "\n")


if __name__ == "__main__":
    main()
