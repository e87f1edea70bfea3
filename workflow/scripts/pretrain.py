import sys

# Append: a resubmitted attempt keeps the log of the attempts before it.
sys.stderr = open(snakemake.log[0], "a")

from mass_core.pretrain.launch import LaunchPlan, launch_pretraining

# One process runs here; more run under torchrun (srun + torchrun on several nodes).
plan = LaunchPlan(processes=snakemake.resources.nproc_per_node, nodes=snakemake.resources.get("nodes", 1), cpus=snakemake.threads)
# 0 only with final.pt; 75 (stopped early, latest.pt written) makes Snakemake retry, and the retry resumes.
sys.exit(launch_pretraining(snakemake.wildcards.method, snakemake.input.manifests, snakemake.params.proposals_roots, snakemake.params.out_dir,
                            snakemake.params.settings, plan))
