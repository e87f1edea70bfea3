# Class-agnostic proposals per standardized case (docs/proposals.md) and
# their recall against the ground truth per dataset.


rule propose:
    input:
        meta=f"{RESULTS}/{{dataset}}/standardized/{{case}}/meta.json",
    output:
        summary=f"{RESULTS}/{{dataset}}/proposals/{{case}}/summary.json",
        qc=report(
            f"{RESULTS}/{{dataset}}/proposals/qc/{{case}}.png",
            caption="../report/proposals_qc.rst",
            category="Proposals",
            subcategory="{dataset}",
        ),
    params:
        image=lambda wildcards, input: str(Path(input.meta).parent / "image.npy"),
        out_dir=lambda wildcards, output: str(Path(output.summary).parent),
        # Recall settings stay out, so that changing them reruns no proposals.
        settings={k: v for k, v in config["proposals"].items() if k != "recall"},
    log:
        "logs/propose/{dataset}/{case}.log",
    group:
        CASE_GROUP
    threads: 1
    # MASS pretraining, the longest job, waits for every case's proposals.
    priority: 50
    conda:
        ENV
    script:
        "../scripts/propose.py"


rule proposal_recall:
    input:
        summaries=proposal_summaries,
        metas=standardized_metas,
    output:
        recall=report(
            f"{RESULTS}/{{dataset}}/proposals/recall.parquet",
            caption="../report/proposal_recall.rst",
            category="Proposals",
        ),
        per_structure=f"{RESULTS}/{{dataset}}/proposals/recall_per_structure.parquet",
    params:
        dataset_dir=lambda wildcards: f"{RESULTS}/{wildcards.dataset}",
        case_ids=lambda wildcards: list(CASES[wildcards.dataset]),
        settings=config["proposals"]["recall"],
    log:
        "logs/proposal_recall/{dataset}.log",
    conda:
        ENV
    script:
        "../scripts/proposal_recall.py"
