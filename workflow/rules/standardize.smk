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


rule listing_skipped:
    output:
        f"{RESULTS}/{{dataset}}/listing_skipped.csv",
    params:
        rows=listing_skipped_rows,
    log:
        "logs/listing_skipped/{dataset}.log",
    conda:
        ENV
    script:
        "../scripts/listing_skipped.py"


rule manifest:
    input:
        metas=standardized_metas,
        table=case_table,
        listing=listing_skipped,
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
