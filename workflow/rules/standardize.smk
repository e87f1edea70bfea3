rule standardize:
    input:
        unpack(standardize_inputs),
    output:
        meta=f"{RESULTS}/{{dataset}}/standardized/{{case}}/meta.json",
    params:
        case=case_source,
        settings=lambda wildcards: STANDARDIZE[wildcards.dataset],
    log:
        "logs/standardize/{dataset}/{case}.log",
    group:
        CASE_GROUP
    conda:
        ENV
    script:
        "../scripts/standardize.py"


rule manifest:
    input:
        metas=standardized_metas,
        table=case_table,
    output:
        manifest=f"{RESULTS}/{{dataset}}/manifest.parquet",
        skipped=report(
            f"{RESULTS}/{{dataset}}/skipped.csv",
            caption="../report/skipped.rst",
            category="Data",
        ),
        provenance=str(provenance_path(f"{RESULTS}/{{dataset}}/manifest.parquet")),
    params:
        splits=config["splits"],
        raw=lambda wildcards: _dataset_root(wildcards.dataset),
    log:
        "logs/manifest/{dataset}.log",
    conda:
        ENV
    script:
        "../scripts/manifest.py"
