import sys

sys.stderr = open(snakemake.log[0], "w")

from mass_core.manifest import write_listing_skip

write_listing_skip(snakemake.wildcards.case, snakemake.params.reason, snakemake.output.meta)
