"""The MASS paper's published splits as case tables (``config/splits/<dataset>.csv``).

The official code lists every dataset's train/val/test cases in
``data/split.py`` (``train_test_split``, used for pretraining and in-context
evaluation). This module reads that file as data (it is never imported or
run), renames each case the way this project's recipe names it, and writes
one ``case_id,split`` table per dataset, which a dataset entry names as its
``split_table``. The tables in ``config/splits`` were made with

    python -m mass_core.paper_splits <MASS checkout>/data/split.py config/splits

autoPET is left out on purpose: the official CT train list shares 54 studies
with the SUV test list, so both autoPET datasets use the seeded split grouped
by patient instead.
"""

from __future__ import annotations

import argparse
import ast
import os
from pathlib import Path
from typing import Callable

import pandas as pd

from mass_core.atomic import write_with
from mass_core.manifest import SPLITS

__all__ = ["CASE_IDS", "official_splits", "split_tables", "write_split_tables"]

# Official name -> this project's case id, per dataset (the recipes' file-derived ids).
CASE_IDS: dict[str, Callable[[object], str]] = {
    "bcv": str,
    "amos_ct": lambda n: f"amos_{int(n):04d}",
    "amos_mr": lambda n: f"amos_{int(n):04d}",
    "kits": lambda n: f"case_{int(n):05d}",
    "lits": lambda n: f"volume-{int(n)}",
    "structseg_thoracic_oar": lambda n: str(int(n)),
    "structseg_head_oar": lambda n: str(int(n)),
    "mnm": str,
    "brats18_flair": str,
    "brats18_t1": str,
    "brats18_t2": str,
    "totalseg_ct": str,
    "totalseg_mr": str,
}


def official_splits(split_file: str | os.PathLike, variable: str = "train_test_split") -> dict[str, list[object]]:
    """The ``<dataset>_<split>`` lists assigned to ``variable`` in the official ``data/split.py``.

    Raises:
        ValueError: the file assigns no literal dict to ``variable``.
    """
    tree = ast.parse(Path(split_file).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == variable for t in node.targets):
            return ast.literal_eval(node.value)
    raise ValueError(f"{split_file}: no '{variable} = {{...}}' assignment")


def split_tables(lists: dict[str, list[object]]) -> dict[str, pd.DataFrame]:
    """One ``case_id,split`` table per dataset of :data:`CASE_IDS`, sorted by split then case id.

    Raises:
        ValueError: a case is listed in two splits of one dataset.
    """
    tables = {}
    for dataset, case_id in CASE_IDS.items():
        rows = [(case_id(name), split) for split in SPLITS for name in lists.get(f"{dataset}_{split}", [])]
        if not rows:
            continue
        table = pd.DataFrame(rows, columns=["case_id", "split"])
        twice = table[table["case_id"].duplicated(keep=False)]
        if len(twice):
            raise ValueError(f"{dataset}: cases in more than one split: {sorted(set(twice['case_id']))[:5]}")
        order = {split: i for i, split in enumerate(SPLITS)}
        tables[dataset] = table.sort_values(["split", "case_id"], key=lambda c: c.map(order) if c.name == "split" else c,
                                            ignore_index=True)
    return tables


def write_split_tables(split_file: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """Write ``<out_dir>/<dataset>.csv`` for every dataset the official file splits."""
    tables = split_tables(official_splits(split_file))
    for dataset, table in tables.items():
        write_with(Path(out_dir) / f"{dataset}.csv", lambda tmp, t=table: t.to_csv(tmp, index=False))
    return tables


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("split_file", help="data/split.py of the official MASS code")
    parser.add_argument("out_dir", help="folder of the tables, e.g. config/splits")
    args = parser.parse_args(argv)
    for dataset, table in write_split_tables(args.split_file, args.out_dir).items():
        counts = table["split"].value_counts()
        print(f"{dataset}: " + "/".join(str(int(counts.get(s, 0))) for s in SPLITS) + " (train/val/test)")


if __name__ == "__main__":
    main()
