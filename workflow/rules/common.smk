import json
from pathlib import Path

from snakemake.utils import validate

from mass_core.datasets import list_cases

validate(config, schema="../schemas/config.schema.yaml")

RESULTS = config["results"]
DATASETS = config["datasets"]
ENV = "../envs/mass.yaml"


wildcard_constraints:
    dataset="|".join(DATASETS),
    case=r"[^/]+",


def _dataset_root(name):
    # A relative root is taken from the working directory, like every other path.
    return DATASETS[name]["root"]


CASES = {name: {case.case_id: case for case in list_cases(spec)} for name, spec in DATASETS.items()}


def case_source(wildcards):
    return CASES[wildcards.dataset][wildcards.case]


def standardize_inputs(wildcards):
    case = case_source(wildcards)
    inputs = {"image": str(case.image)}
    if case.label is not None:
        inputs["label"] = str(case.label)
    return inputs


def standardized_metas(wildcards):
    return [f"{RESULTS}/{wildcards.dataset}/standardized/{cid}/meta.json" for cid in CASES[wildcards.dataset]]


def case_table(wildcards):
    spec = DATASETS[wildcards.dataset]
    return [str(Path(spec["root"]) / spec["class_table"])] if spec.get("class_table") else []


def phantom_files(name):
    root = Path(DATASETS[name]["root"])
    files = {"table": root / "classes.csv", "info": root / "dataset.json"}
    images = [str(root / "images" / f"{cid}.nii.gz") for cid in CASES[name]]
    labels = [str(root / "labels" / f"{cid}.nii.gz") for cid in CASES[name]]
    return {"images": images, "labels": labels, **{k: str(v) for k, v in files.items()}}


def manifests():
    return [f"{RESULTS}/{name}/manifest.parquet" for name in DATASETS]


def all_targets():
    return manifests()
