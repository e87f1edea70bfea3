import sys

sys.stderr = open(snakemake.log[0], "w")

from mass_core.pretrain.reconstruction_figure import reconstruction_figure

reconstruction_figure(snakemake.input.final, snakemake.input.manifest, snakemake.output[0], snakemake.params.mask_ratio)
