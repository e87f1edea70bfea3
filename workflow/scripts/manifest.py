import sys

sys.stderr = open(snakemake.log[0], "w")

from mass_core.manifest import SplitParams, build_manifest

build_manifest(
    snakemake.input.metas,
    snakemake.output.manifest,
    snakemake.output.skipped,
    SplitParams(**snakemake.params.splits),
    case_table=snakemake.input.table[0] if snakemake.input.table else None,
)
