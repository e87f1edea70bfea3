"""Command line of ``mass_core``: every pipeline stage without Snakemake.

Run ``mass-core --help`` (or ``python -m mass_core --help``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["main"]


def _standardize(args: argparse.Namespace) -> int:
    from mass_core.datasets import CaseSource
    from mass_core.standardize import StandardizeParams, run_standardize

    params = StandardizeParams(spacing_mm=tuple(args.spacing), margin_mm=args.margin_mm)
    case = CaseSource(args.case_id, Path(args.image), Path(args.label) if args.label else None, args.modality, args.ignore_label)
    meta = run_standardize(case, args.out, params, on_error=args.on_error)
    print(f"{args.case_id}: {meta['status']}" + (f" ({meta['reason']})" if meta["status"] != "ok" else f", shape {meta['shape']}"))
    return 0


def _manifest(args: argparse.Namespace) -> int:
    from mass_core.manifest import SplitParams, build_manifest

    out = Path(args.out_dir)
    manifest = build_manifest(args.metas, out / "manifest.parquet", out / "skipped.csv",
                              SplitParams(args.val_fraction, args.test_fraction, args.seed), args.case_table)
    print(f"{len(manifest)} cases -> {out / 'manifest.parquet'}; skipped cases in {out / 'skipped.csv'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``mass-core`` argument parser."""
    parser = argparse.ArgumentParser(prog="mass-core", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    # Listed for --help; their own parsers (mass_core.phantom, mass_core.evaluate.infer) read the options.
    commands.add_parser("phantom", help="generate the phantom dataset (see `mass-core phantom --help`)", add_help=False)
    commands.add_parser("infer", help="segment raw scans in context with a MASS checkpoint (see `mass-core infer --help`)", add_help=False)

    std = commands.add_parser("standardize", help="standardize one case")
    std.add_argument("--image", required=True, help="image file or DICOM series folder")
    std.add_argument("--label", help="label map on the image's grid")
    std.add_argument("--case-id", required=True)
    std.add_argument("--out", required=True, help="output folder of the case")
    std.add_argument("--modality", default="CT", choices=["CT", "MR", "PET"])
    std.add_argument("--ignore-label", type=int, metavar="VALUE",
                     help="label value of unlabeled voxels (often 255): no class, left out of training and scoring")
    std.add_argument("--spacing", type=float, nargs=3, default=[1.5, 1.5, 1.5], metavar=("X", "Y", "Z"), help="target spacing in mm")
    std.add_argument("--margin-mm", type=float, default=10.0)
    std.add_argument("--on-error", choices=["fail", "skip"], default="fail")
    std.set_defaults(run=_standardize)

    man = commands.add_parser("manifest", help="build a dataset manifest from standardized cases")
    man.add_argument("metas", nargs="+", help="meta.json files of the standardized cases")
    man.add_argument("--out-dir", required=True)
    man.add_argument("--case-table", help="CSV with case_id and optional class_label, split")
    man.add_argument("--val-fraction", type=float, default=0.15)
    man.add_argument("--test-fraction", type=float, default=0.25)
    man.add_argument("--seed", type=int, default=0)
    man.set_defaults(run=_manifest)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mass-core``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["phantom"]:
        from mass_core.phantom import main as phantom_main

        return phantom_main(argv[1:])
    if argv[:1] == ["infer"]:
        # Set before torch loads its OpenMP runtime, which reads it once: threads
        # waiting at a barrier sleep instead of spinning. On cores shared with
        # other jobs a spinning thread waits for a descheduled one at every
        # operation. Demo model, 2 threads on 2 busy cores: 1.2-2.0 s per window
        # spinning, 0.25-0.34 s sleeping, 0.3 s for 1 thread.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from mass_core.evaluate.infer import main_infer

        return main_infer(argv[1:])
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
