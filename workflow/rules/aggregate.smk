# The paper's tables and figures from every evaluation run. Rerunning
# `aggregate` alone rewrites byte-identical tables.


rule aggregate:
    input:
        finetune=finetune_metrics(),
        fewshot=fewshot_metrics(),
        probe=probe_metrics(),
    output:
        **{f"{name}_{ext}": f"{TABLES_DIR}/{name}.{ext}" for name in TABLES for ext in ("parquet", "md")},
        **{
            f"{name}_csv": report(f"{TABLES_DIR}/{name}.csv", caption=f"../report/{name}.rst", category="Tables")
            for name in TABLES
        },
        **{f"{name}_provenance": str(provenance_path(f"{TABLES_DIR}/{name}.parquet")) for name in TABLES},
    params:
        methods=TABLE_METHODS,
        class_names={name: class_names(DATASETS[name]) for name in dict.fromkeys(FINETUNE_DATASETS + FEWSHOT_DATASETS)},
        # Recorded in the tables' provenance (hashes), not inputs: the metrics already depend on them.
        checkpoints=[f"{RESULTS}/pretrain/{method}/encoder.pt" for method in METHODS],
    log:
        "logs/aggregate.log",
    conda:
        ENV
    script:
        "../scripts/aggregate.py"


rule plots:
    input:
        dice=f"{TABLES_DIR}/segmentation_dice.parquet",
        fewshot=f"{TABLES_DIR}/fewshot_dice.parquet",
        fewshot_per_class=f"{TABLES_DIR}/fewshot_per_class.parquet",
        examples=example_inputs(),
    output:
        efficiency=report(
            f"{PLOTS_DIR}/label_efficiency.png", caption="../report/label_efficiency.rst", category="Evaluation"
        ),
        fewshot=report(f"{PLOTS_DIR}/fewshot_dice.png", caption="../report/fewshot_dice_plot.rst", category="Evaluation"),
        examples=report(
            expand(f"{PLOTS_DIR}/examples_{{dataset}}.png", dataset=FINETUNE_DATASETS),
            caption="../report/examples.rst",
            category="Evaluation",
        ),
    params:
        methods=TABLE_METHODS,
        examples=example_specs(),
        novel_classes=EVALUATION["novel_classes"],
    log:
        "logs/plots.log",
    conda:
        ENV
    script:
        "../scripts/plots.py"


rule learning_curve:
    input:
        fewshot=[p for paths in curve_runs()[0].values() for p in paths],
        finetune=[p for paths in curve_runs()[1].values() for p in paths],
    output:
        table=f"{TABLES_DIR}/learning_curve.parquet",
        csv=f"{TABLES_DIR}/learning_curve.csv",
        markdown=f"{TABLES_DIR}/learning_curve.md",
        provenance=str(provenance_path(f"{TABLES_DIR}/learning_curve.parquet")),
        plot=report(f"{PLOTS_DIR}/learning_curve.png", caption="../report/learning_curve.rst", category="Evaluation"),
    params:
        runs=curve_runs(),
        label_count=CURVE["label_count"],
    log:
        "logs/learning_curve.log",
    conda:
        ENV
    script:
        "../scripts/learning_curve.py"


rule paper_tables:
    input:
        fewshot=f"{TABLES_DIR}/fewshot_dice.parquet",
        finetune=f"{TABLES_DIR}/segmentation_dice.parquet",
        classification=f"{TABLES_DIR}/classification_auc.parquet",
        published=PUBLISHED_NUMBERS,
    output:
        **{f"{name}_md": f"{TABLES_DIR}/{name}.md" for name in PAPER_TABLES},
        **{
            f"{name}_csv": report(f"{TABLES_DIR}/{name}.csv", caption="../report/paper_tables.rst", category="Tables")
            for name in PAPER_TABLES
        },
    params:
        methods=TABLE_METHODS,
    log:
        "logs/paper_tables.log",
    conda:
        ENV
    script:
        "../scripts/paper_tables.py"
