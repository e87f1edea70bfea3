import sys

sys.stderr = open(snakemake.log[0], "w")

from mass_core.versioning import snapshot

snapshot(snakemake.params.paths, snakemake.output.record)
