# Downstream evaluation, fanned out over dataset x method x label fraction x seed
# (finetuning), dataset x in-context method x k x seed (few-shot) and
# dataset x method x seed (frozen-encoder probe). Every method, scratch included
# (its random initialisation), provides results/pretrain/<method>/encoder.pt.
# Every job selects on the val split only and reports on the test split.


rule finetune_seg:
    input:
        manifest=f"{RESULTS}/{{dataset}}/manifest.parquet",
        encoder=pretrained_encoder,
    output:
        metrics=f"{EVALUATION_DIR}/{{dataset}}/finetune/{{method}}/fraction_{{fraction}}/seed_{{seed}}/metrics.parquet",
        summary=f"{EVALUATION_DIR}/{{dataset}}/finetune/{{method}}/fraction_{{fraction}}/seed_{{seed}}/summary.json",
        predictions=f"{EVALUATION_DIR}/{{dataset}}/finetune/{{method}}/fraction_{{fraction}}/seed_{{seed}}/predictions.npz",
    params:
        settings=EVALUATION["finetune"],
        subset_seed=EVALUATION["subset_seed"],
        encoder=config["pretrain"]["encoder"],
    wildcard_constraints:
        method="|".join(METHODS),
        fraction=r"[0-9]*\.?[0-9]+",
        seed=r"\d+",
    log:
        "logs/finetune_seg/{dataset}/{method}/fraction_{fraction}/seed_{seed}.log",
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
        pooling=EVALUATION["probe"]["pooling"],
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
