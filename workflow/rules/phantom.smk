# One generator job per dataset of the "phantom" layout; its files are the
# raw inputs of that dataset's standardize jobs.
for _name in [name for name, spec in DATASETS.items() if spec.get("layout") == "phantom"]:

    rule:
        name:
            f"generate_{_name}"
        output:
            **phantom_files(_name),
        params:
            settings=DATASETS[_name]["phantom"],
        log:
            f"logs/generate/{_name}.log",
        conda:
            ENV
        script:
            "../scripts/phantom.py"
