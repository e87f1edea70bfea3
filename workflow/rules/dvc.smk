# Version a finished run with DVC: `snakemake snapshot` tracks the raw data
# and the outputs worth keeping (snapshot_paths() in common.smk) and pushes
# them to the default remote; commit the .dvc files it stages afterwards.
# docs/versioning.md describes restoring a snapshot on a fresh clone.
rule snapshot:
    input:
        all_targets(),
    output:
        record=f"{RESULTS}/snapshot.json",
    params:
        paths=snapshot_paths(),
    log:
        "logs/snapshot.log",
    # DVC and git work on the repository: run where Snakemake runs, not on a compute node.
    localrule: True
    conda:
        ENV
    script:
        "../scripts/snapshot.py"
