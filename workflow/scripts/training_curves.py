import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from mass_core.pretrain.curves import plot_training_curves

plot_training_curves(Path(snakemake.input.final).parent, snakemake.output[0], title=snakemake.wildcards.method)
