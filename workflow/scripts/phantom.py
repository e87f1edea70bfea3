import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from mass_core.phantom import PhantomParams, write_dataset

settings = snakemake.params.settings
params = PhantomParams(
    shape=tuple(settings["shape"]),
    spacing_mm=tuple(settings["spacing"]),
    lesion_probability=settings["lesion_probability"],
    seed=settings["seed"],
)
write_dataset(Path(snakemake.output.info).parent, settings["n_cases"], params)
