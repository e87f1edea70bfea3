import sys
from pathlib import Path

# Append: a resubmitted attempt keeps the log of the attempts before it.
sys.stderr = open(snakemake.log[0], "a")

from mass_core.evaluate.finetune import FinetuneParams, FinetuneStopped, run_finetune
from mass_core.evaluate.subsets import Budget
from mass_core.models.encoder import EncoderConfig

try:
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
except FinetuneStopped as stopped:
    # Exit 75 (latest.pt written) makes Snakemake retry, and the retry resumes.
    print(stopped, file=sys.stderr)
    sys.exit(stopped.exit_code)
