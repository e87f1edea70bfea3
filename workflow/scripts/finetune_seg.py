import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from mass_core.evaluate.finetune import FinetuneParams, run_finetune
from mass_core.evaluate.subsets import Budget
from mass_core.models.encoder import EncoderConfig

run_finetune(
    snakemake.input.manifest,
    Path(snakemake.output.metrics).parent,
    dataset=snakemake.wildcards.dataset,
    method=snakemake.wildcards.method,
    budget=Budget.parse(snakemake.wildcards.budget),
    seed=int(snakemake.wildcards.seed),
    subset_seed=snakemake.params.subset_seed,
    encoder_weights=snakemake.params.start,
    encoder_config=EncoderConfig.from_dict(snakemake.params.encoder),
    params=FinetuneParams.from_config(snakemake.params.settings),
    threads=snakemake.threads,
    whole_model=snakemake.params.whole_model,
)
