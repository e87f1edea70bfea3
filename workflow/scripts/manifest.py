import sys

sys.stderr = open(snakemake.log[0], "w")

from mass_core.manifest import SplitParams, build_manifest
from mass_core.provenance import write_provenance

build_manifest(
    snakemake.input.metas,
    snakemake.output.manifest,
    snakemake.output.skipped,
    SplitParams.from_config(snakemake.params.splits),
    case_table=list(snakemake.input.table),
)
# The whole run config is recorded, not passed as params: it must not trigger reruns.
write_provenance(snakemake.output.manifest, [*snakemake.input, snakemake.params.raw], snakemake.config)
