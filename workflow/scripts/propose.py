import sys

sys.stderr = open(snakemake.log[0], "w")

from mass_core.proposals import ProposalParams, propose_case

propose_case(
    snakemake.params.image,
    snakemake.params.out_dir,
    snakemake.wildcards.case,
    ProposalParams.from_config(snakemake.params.settings),
    on_error=snakemake.params.settings["on_error"],
    qc_png=snakemake.output.qc,
)
