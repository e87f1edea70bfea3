rule standardize:
    input:
        unpack(standardize_inputs),
    output:
        meta=f"{RESULTS}/{{dataset}}/standardized/{{case}}/meta.json",
    params:
        case=case_source,
        settings=config["standardize"],
    log:
        "logs/standardize/{dataset}/{case}.log",
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
    params:
        splits=config["splits"],
    log:
        "logs/manifest/{dataset}.log",
    conda:
        ENV
    script:
        "../scripts/manifest.py"
