"""Command line of the pretrain stage, for runs outside Snakemake and for ``torchrun``.

Example (4 GPUs on one node; ``pretrain.train.batch_size`` is the global batch)::

    torchrun --standalone --nproc-per-node=4 -m mass_core.pretrain --method mass \\
        --manifest results/ct/manifest.parquet --proposals results/ct/proposals \\
        --out results/pretrain/mass --config config/paper.yaml --resumable-status 0

Exit status: 0 when ``final.pt`` exists, 75 (``--resumable-status``) when the
run stopped early and left ``latest.pt`` (run the same command again to
continue). torchrun reports any non-zero worker status as a failure of its
own (status 1), so under torchrun pass ``--resumable-status 0`` and tell the
two apart by ``final.pt``, as :mod:`mass_core.pretrain.launch` does.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import yaml

from mass_core.pretrain.run import PRETEXT_TASKS, run_pretraining
from mass_core.pretrain.trainer import EXIT_RESUMABLE

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mass_core.pretrain", description=__doc__.splitlines()[0])
    parser.add_argument("--method", required=True, help=f"a registered pretext task ({', '.join(PRETEXT_TASKS)}) or one of the config's pretrain.method_modules")
    parser.add_argument("--manifest", required=True, action="append", help="a dataset's manifest.parquet (repeatable)")
    parser.add_argument("--proposals", required=True, action="append", help="that dataset's proposals folder (repeatable, same order)")
    parser.add_argument("--out", required=True, help="run folder, e.g. results/pretrain/mass")
    parser.add_argument("--config", help="YAML holding the 'pretrain' section (or a whole pipeline config)")
    parser.add_argument("--resumable-status", type=int, default=EXIT_RESUMABLE,
                        help=f"exit status when the run stopped early and left latest.pt (default {EXIT_RESUMABLE})")
    args = parser.parse_args(argv)
    cfg = {}
    if args.config:
        with open(args.config) as f:
            cfg = yaml.safe_load(f) or {}
        cfg = cfg.get("pretrain", cfg)
    result = run_pretraining(args.method, args.manifest, args.proposals, args.out, cfg)
    return 0 if result.finished else args.resumable_status


if __name__ == "__main__":
    sys.exit(main())
