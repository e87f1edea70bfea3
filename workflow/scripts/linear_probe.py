import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from mass_core.evaluate.probe import ProbeParams, run_probe
from mass_core.models.encoder import EncoderConfig

run_probe(
    snakemake.input.manifest,
    Path(snakemake.output.metrics).parent,
    dataset=snakemake.wildcards.dataset,
    method=snakemake.wildcards.method,
    seed=int(snakemake.wildcards.seed),
    encoder_weights=snakemake.input.encoder,
    encoder_config=EncoderConfig.from_dict(snakemake.params.encoder),
    params=ProbeParams.from_config(snakemake.params.settings),
    threads=snakemake.threads,
)
