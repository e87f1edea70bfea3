"""Recipes: the paper's public datasets read exactly as their releases lie on disk.

A dataset entry names one (``recipe: kits``) and its ``root``, the folder the
release was unpacked into; ``docs/paper.md`` says where to get each and which
folder it expects. A recipe lists the cases and describes, on each
:class:`~mass_core.datasets.CaseSource`, what the official MASS code fixes
while reading (wrong headers, 4D frames, per-structure masks, ...);
:func:`mass_core.raw_case.read_case` applies it. A case folder lacking a
file the recipe needs is not dropped silently: the listing names it and the
missing file (:class:`~mass_core.datasets.SkippedCase`), and the manifest
lists it in ``skipped.csv``. Each recipe lives in a module of its own, named
after the release.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mass_core.datasets import Listing
from mass_core.recipes import amos, autopet, bcv, brats18, kits, lits, mnm, rsna_ich, structseg, totalseg
from mass_core.recipes.recipe import Recipe

__all__ = ["RECIPES", "Recipe", "recipe_listing"]


RECIPES: dict[str, Recipe] = {
    "amos_ct": amos.RECIPES["amos_ct"],
    "amos_mr": amos.RECIPES["amos_mr"],
    "autopet_ct": autopet.RECIPES["autopet_ct"],
    "autopet_suv": autopet.RECIPES["autopet_suv"],
    "bcv": bcv.RECIPE,
    "brats18_flair": brats18.RECIPES["brats18_flair"],
    "brats18_t1": brats18.RECIPES["brats18_t1"],
    "brats18_t2": brats18.RECIPES["brats18_t2"],
    "kits": kits.RECIPE,
    "lits": lits.RECIPE,
    "mnm": mnm.RECIPE,
    "rsna_ich": rsna_ich.RECIPE,
    "structseg_head_oar": structseg.RECIPES["structseg_head_oar"],
    "structseg_thoracic_oar": structseg.RECIPES["structseg_thoracic_oar"],
    "totalseg_ct": totalseg.RECIPES["totalseg_ct"],
    "totalseg_mr": totalseg.RECIPES["totalseg_mr"],
}


def recipe_listing(spec: dict[str, Any]) -> Listing:
    """The cases of a dataset entry that names a recipe, and the case folders it could not use.

    Raises:
        ValueError: unknown recipe, ``root`` missing, or no usable case found
            there (the message says which files the recipe expects and, where
            folders were left out, why the first was).
    """
    name = spec["recipe"]
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; expected one of {sorted(RECIPES)}")
    recipe = RECIPES[name]
    root = Path(spec["root"])
    if not root.is_dir():
        raise ValueError(f"recipe {name!r}: root {root} is not a folder; it should hold {recipe.layout}")
    listing = recipe.cases(root)
    if not listing.cases:
        left_out = (f" ({len(listing.skipped)} case folder(s) left out, e.g. {listing.skipped[0].case_id}: "
                    f"{listing.skipped[0].reason})") if listing.skipped else ""
        raise ValueError(f"recipe {name!r}: no cases found in {root}; expected {recipe.layout}{left_out}")
    return listing
