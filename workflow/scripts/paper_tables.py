import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from mass_core.evaluate.paper_tables import paper_tables

paper_tables(Path(snakemake.input.fewshot).parent, snakemake.input.published, snakemake.params.methods,
             out_dir=Path(snakemake.output.paper_fewshot_md).parent)
