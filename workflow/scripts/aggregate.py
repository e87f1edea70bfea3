import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from mass_core.evaluate.aggregate import TABLES, aggregate
from mass_core.provenance import write_provenance

aggregate(
    snakemake.input.finetune,
    snakemake.input.fewshot,
    snakemake.input.probe,
    Path(snakemake.output.segmentation_dice_parquet).parent,
    methods=snakemake.params.methods,
    class_names=snakemake.params.class_names,
)
# The whole run config is recorded, not passed as params: it must not trigger reruns.
for name in TABLES:
    write_provenance(getattr(snakemake.output, f"{name}_parquet"), [*snakemake.input, *snakemake.params.checkpoints], snakemake.config)
