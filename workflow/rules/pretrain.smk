# One pretraining run per method over the training splits of the pretraining
# datasets. A run that stops early (time limit, pre-emption, max_wall_seconds)
# leaves latest.pt and exits 75; `retries` resubmits it and it continues.
# pretrain.processes > 1 or pretrain.nodes > 1 start the run under torchrun
# (srun + torchrun on several nodes); see pretrain_resources.


rule pretrain:
    input:
        manifests=pretrain_manifests(),
        proposals=pretrain_proposals,
    output:
        final=f"{RESULTS}/pretrain/{{method}}/final.pt",
        encoder=f"{RESULTS}/pretrain/{{method}}/encoder.pt",
        metrics=report(
            f"{RESULTS}/pretrain/{{method}}/metrics.csv",
            caption="../report/pretrain_metrics.rst",
            category="Pretraining",
            subcategory="{method}",
        ),
    wildcard_constraints:
        method=method_pattern(),
    params:
        out_dir=lambda wildcards, output: str(Path(output.final).parent),
        proposals_roots=[f"{RESULTS}/{name}/proposals" for name in PRETRAIN_DATASETS],
        settings=pretrain_settings,
    log:
        "logs/pretrain/{method}.log",
    retries: config["pretrain"]["resubmissions"]
    # Pretraining is the longest job and everything downstream waits for it:
    # start it as soon as its inputs exist rather than after other ready jobs.
    priority: 50
    resources:
        runtime=config["pretrain"]["runtime_minutes"],
        **pretrain_resources(),
    threads: config["pretrain"]["threads"]
    conda:
        ENV
    script:
        "../scripts/pretrain.py"


rule init_scratch:
    output:
        encoder=f"{RESULTS}/pretrain/scratch/encoder.pt",
    params:
        settings=scratch_settings(),
    log:
        "logs/pretrain/scratch.log",
    conda:
        ENV
    script:
        "../scripts/init_scratch.py"


rule reconstruction_figure:
    input:
        final=f"{RESULTS}/pretrain/{{method}}/final.pt",
        manifest=pretrain_manifests()[0],
    output:
        report(
            f"{RESULTS}/pretrain/{{method}}/reconstruction.png",
            caption="../report/reconstruction.rst",
            category="Pretraining",
            subcategory="{method}",
        ),
    wildcard_constraints:
        method=method_pattern(lambda entry: entry.reconstruction_figure),
    params:
        mask_ratio=lambda wildcards: config["pretrain"][PRETEXT_TASKS[wildcards.method].section]["mask_ratio"],
    log:
        "logs/pretrain/{method}_reconstruction.log",
    conda:
        ENV
    script:
        "../scripts/reconstruction_figure.py"


rule training_curves:
    input:
        final=f"{RESULTS}/pretrain/{{method}}/final.pt",
        metrics=f"{RESULTS}/pretrain/{{method}}/metrics.csv",
    output:
        report(
            f"{RESULTS}/pretrain/{{method}}/training_curves.png",
            caption="../report/training_curves.rst",
            category="Pretraining",
            subcategory="{method}",
        ),
    wildcard_constraints:
        method=method_pattern(),
    log:
        "logs/pretrain/{method}_curves.log",
    conda:
        ENV
    script:
        "../scripts/training_curves.py"
