import sys

sys.stderr = open(snakemake.log[0], "w")

from mass_core.evaluate.plots import make_plots

make_plots(
    snakemake.input.dice,
    snakemake.input.fewshot,
    snakemake.input.fewshot_per_class,
    snakemake.output.efficiency,
    snakemake.output.fewshot,
    examples=snakemake.params.examples,
    methods=snakemake.params.methods,
    novel_classes=snakemake.params.novel_classes,
)
