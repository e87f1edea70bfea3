import sys

sys.stderr = open(snakemake.log[0], "w")

from mass_core.evaluate.learning_curve import learning_curve
from mass_core.provenance import write_provenance

fewshot, finetune = snakemake.params.runs
learning_curve(fewshot, finetune, snakemake.output.table, snakemake.output.plot, label_count=snakemake.params.label_count)
# The whole run config is recorded, not passed as params: it must not trigger reruns.
write_provenance(snakemake.output.table, list(snakemake.input), snakemake.config)
