import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from mass_core.standardize import StandardizeParams, run_standardize

run_standardize(
    snakemake.params.case,
    Path(snakemake.output.meta).parent,
    StandardizeParams.from_config(snakemake.params.settings),
    on_error=snakemake.params.settings["on_error"],
)
