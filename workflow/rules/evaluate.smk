# Downstream evaluation, fanned out over dataset x method x label budget x seed
# (finetuning), dataset x in-context method x k x seed (few-shot) and
# dataset x method x seed (frozen-encoder probe). Every method, scratch included
# (its random initialisation), provides results/pretrain/<method>/encoder.pt.
# Every job selects on the val split only and reports on the test split.


rule finetune_seg:
    input:
        manifest=f"{RESULTS}/{{dataset}}/manifest.parquet",
        encoder=finetune_start,
    output:
        metrics=f"{EVALUATION_DIR}/{{dataset}}/finetune/{{method}}/{{budget}}/seed_{{seed}}/metrics.parquet",
        summary=f"{EVALUATION_DIR}/{{dataset}}/finetune/{{method}}/{{budget}}/seed_{{seed}}/summary.json",
        predictions=f"{EVALUATION_DIR}/{{dataset}}/finetune/{{method}}/{{budget}}/seed_{{seed}}/predictions.npz",
    params:
        settings=EVALUATION["finetune"],
        subset_seed=EVALUATION["subset_seed"],
        encoder=config["pretrain"]["encoder"],
        start=finetune_start,
        whole_model=finetune_whole_model,
    wildcard_constraints:
        method="|".join(FINETUNE_METHODS),
        budget=r"fraction_[0-9]*\.?[0-9]+|cases_[0-9]+",
        seed=r"\d+",
    log:
        "logs/finetune_seg/{dataset}/{method}/{budget}/seed_{seed}.log",
    # A run stopped by its time limit leaves training/latest.pt and exits 75; the retry continues it.
    retries: EVALUATION["resubmissions"]
    threads: 1
    resources:
        **gpu_resources(),
    conda:
        ENV
    script:
        "../scripts/finetune_seg.py"


rule incontext_fewshot:
    input:
        manifest=f"{RESULTS}/{{dataset}}/manifest.parquet",
        checkpoint=f"{RESULTS}/pretrain/{{method}}/final.pt",
    output:
        metrics=f"{EVALUATION_DIR}/{{dataset}}/fewshot/{{method}}/k_{{k}}/seed_{{seed}}/metrics.parquet",
        summary=f"{EVALUATION_DIR}/{{dataset}}/fewshot/{{method}}/k_{{k}}/seed_{{seed}}/summary.json",
    params:
        settings=EVALUATION["fewshot"],
        checkpoint=lambda wildcards: f"{RESULTS}/pretrain/{wildcards.method}/final.pt",
        references=lambda wildcards: DATASETS[wildcards.dataset]["references"],
    wildcard_constraints:
        method="|".join(INCONTEXT_METHODS),
        k=r"\d+",
        seed=r"\d+",
    log:
        "logs/incontext_fewshot/{dataset}/{method}/k_{k}/seed_{seed}.log",
    threads: 1
    resources:
        **gpu_resources(),
    conda:
        ENV
    script:
        "../scripts/incontext_fewshot.py"


rule linear_probe:
    input:
        manifest=f"{RESULTS}/{{dataset}}/manifest.parquet",
        encoder=pretrained_encoder,
    output:
        metrics=f"{EVALUATION_DIR}/{{dataset}}/probe/{{method}}/seed_{{seed}}/metrics.parquet",
        predictions=f"{EVALUATION_DIR}/{{dataset}}/probe/{{method}}/seed_{{seed}}/predictions.parquet",
    params:
        settings=EVALUATION["probe"],
        encoder=config["pretrain"]["encoder"],
    wildcard_constraints:
        method="|".join(METHODS),
        seed=r"\d+",
    log:
        "logs/linear_probe/{dataset}/{method}/seed_{seed}.log",
    threads: 1
    resources:
        **gpu_resources(),
    conda:
        ENV
    script:
        "../scripts/linear_probe.py"


# The learning curve of the in-context methods (MASS; evaluation.learning_curve): the snapshots are not
# declared outputs of `pretrain` (a failed attempt would delete them, and the
# resumed run could not write them again), so these jobs wait for final.pt
# and read the snapshot named in their params.


rule curve_fewshot:
    input:
        manifest=f"{RESULTS}/{{dataset}}/manifest.parquet",
        final=f"{RESULTS}/pretrain/{{method}}/final.pt",
    output:
        metrics=f"{EVALUATION_DIR}/{{dataset}}/curve/step_{{step}}/fewshot/{{method}}/k_{{k}}/seed_{{seed}}/metrics.parquet",
        summary=f"{EVALUATION_DIR}/{{dataset}}/curve/step_{{step}}/fewshot/{{method}}/k_{{k}}/seed_{{seed}}/summary.json",
    params:
        settings=EVALUATION["fewshot"],
        checkpoint=curve_checkpoint,
        references=lambda wildcards: DATASETS[wildcards.dataset]["references"],
    wildcard_constraints:
        method=method_pattern(lambda entry: entry.in_context),
        step=r"\d+",
        k=r"\d+",
        seed=r"\d+",
    log:
        "logs/curve_fewshot/{dataset}/step_{step}/k_{k}/seed_{seed}_{method}.log",
    threads: 1
    resources:
        **gpu_resources(),
    conda:
        ENV
    script:
        "../scripts/incontext_fewshot.py"


rule curve_finetune:
    input:
        manifest=f"{RESULTS}/{{dataset}}/manifest.parquet",
        final=f"{RESULTS}/pretrain/{{method}}/final.pt",
    output:
        metrics=f"{EVALUATION_DIR}/{{dataset}}/curve/step_{{step}}/finetune/{{method}}/{{budget}}/seed_{{seed}}/metrics.parquet",
        summary=f"{EVALUATION_DIR}/{{dataset}}/curve/step_{{step}}/finetune/{{method}}/{{budget}}/seed_{{seed}}/summary.json",
        predictions=f"{EVALUATION_DIR}/{{dataset}}/curve/step_{{step}}/finetune/{{method}}/{{budget}}/seed_{{seed}}/predictions.npz",
    params:
        settings=EVALUATION["finetune"],
        subset_seed=EVALUATION["subset_seed"],
        encoder=config["pretrain"]["encoder"],
        start=curve_checkpoint,
        whole_model=True,
    wildcard_constraints:
        method=method_pattern(lambda entry: entry.in_context),
        step=r"\d+",
        budget=r"cases_[0-9]+",
        seed=r"\d+",
    log:
        "logs/curve_finetune/{dataset}/step_{step}/{budget}/seed_{seed}_{method}.log",
    threads: 1
    resources:
        **gpu_resources(),
    conda:
        ENV
    script:
        "../scripts/finetune_seg.py"
