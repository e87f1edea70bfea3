import sys

sys.stderr = open(snakemake.log[0], "w")

from mass_core.manifest import write_listing_skipped

write_listing_skipped(snakemake.params.rows, snakemake.output[0])
