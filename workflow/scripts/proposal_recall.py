import sys

sys.stderr = open(snakemake.log[0], "w")

from mass_core.proposals import RecallParams, recall_table

recall_table(
    snakemake.params.dataset_dir,
    snakemake.params.case_ids,
    snakemake.output.recall,
    per_structure_path=snakemake.output.per_structure,
    params=RecallParams.from_config(snakemake.params.settings),
)
