import sys

sys.stderr = open(snakemake.log[0], "w")

from mass_core.proposals import recall_table

recall_table(
    snakemake.params.case_ids,
    snakemake.params.standardized_dirs,
    snakemake.params.proposal_dirs,
    snakemake.output.recall,
    per_structure_path=snakemake.output.per_structure,
    structures=snakemake.params.settings["structures"],
    min_structure_mm3=snakemake.params.settings["min_structure_mm3"],
)
