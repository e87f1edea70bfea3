import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from mass_core.evaluate.fewshot import FewshotParams, run_fewshot

run_fewshot(
    snakemake.input.manifest,
    snakemake.params.checkpoint,
    Path(snakemake.output.metrics).parent,
    dataset=snakemake.wildcards.dataset,
    method=snakemake.wildcards.method,
    k=int(snakemake.wildcards.k),
    seed=int(snakemake.wildcards.seed),
    params=FewshotParams.from_config(snakemake.params.settings),
    threads=snakemake.threads,
    fixed_references=snakemake.params.references,
)
