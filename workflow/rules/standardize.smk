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


# A case folder the listing left out (a recipe's missing file) gets a skipped
# meta.json, so that the manifest lists it in skipped.csv like a case that
# standardize skipped; datasets without one plan no such job.
rule listing_skipped:
    output:
        meta=f"{RESULTS}/{{dataset}}/listing/{{case}}/meta.json",
    params:
        reason=listing_reason,
    log:
        "logs/listing_skipped/{dataset}/{case}.log",
    # One small file: run where Snakemake runs, not as a cluster job.
    localrule: True
    conda:
        ENV
    script:
        "../scripts/listing_skipped.py"


rule manifest:
    input:
        metas=case_metas,
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
