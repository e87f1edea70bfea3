import sys

# Append: a resubmitted attempt keeps the log of the attempts before it.
sys.stderr = open(snakemake.log[0], "a")

import torch
from mass_core.pretrain.run import run_pretraining

torch.set_num_threads(snakemake.threads)
result = run_pretraining(
    snakemake.wildcards.method,
    snakemake.input.manifests,
    snakemake.params.proposals_roots,
    snakemake.params.out_dir,
    snakemake.params.settings,
)
# 0 only with final.pt; 75 (stopped early, latest.pt written) makes Snakemake retry, and the retry resumes.
sys.exit(result.exit_code)
