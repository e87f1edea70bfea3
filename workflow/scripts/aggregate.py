import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from mass_core.evaluate.aggregate import aggregate

aggregate(
    snakemake.input.finetune,
    snakemake.input.fewshot,
    snakemake.input.probe,
    Path(snakemake.output.segmentation_dice_parquet).parent,
    methods=snakemake.params.methods,
)
