import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from mass_core.pretrain.run import init_scratch

init_scratch(Path(snakemake.output.encoder).parent, snakemake.params.settings)
