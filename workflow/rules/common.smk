import json
from pathlib import Path

from snakemake.utils import validate

from mass_core.datasets import list_cases
from mass_core.provenance import provenance_path

validate(config, schema="../schemas/config.schema.yaml")

RESULTS = config["results"]
DATASETS = config["datasets"]
CLUSTER = config["cluster"]
ENV = "../envs/mass.yaml"
# Per-case rules (standardize, propose) join this group, so that on a cluster
# one job runs several cases (the profile's group-components says how many)
# instead of flooding the scheduler; local runs ignore groups.
CASE_GROUP = "cases" if CLUSTER["group_cases"] else None


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


PRETRAIN_DATASETS = config["pretrain"]["datasets"] or list(DATASETS)
METHODS = config["pretrain"]["methods"]
TRAINED_METHODS = [m for m in METHODS if m != "scratch"]


def proposal_summaries(wildcards):
    return [f"{RESULTS}/{wildcards.dataset}/proposals/{cid}/summary.json" for cid in CASES[wildcards.dataset]]


def proposal_recall_tables():
    return [f"{RESULTS}/{name}/proposals/recall.parquet" for name in DATASETS]


def pretrain_manifests():
    return [f"{RESULTS}/{name}/manifest.parquet" for name in PRETRAIN_DATASETS]


def pretrain_proposals(wildcards):
    # Only MASS learns from proposals; the baselines can start as soon as the manifests exist.
    if wildcards.method != "mass":
        return []
    return [f"{RESULTS}/{name}/proposals/{cid}/summary.json" for name in PRETRAIN_DATASETS for cid in CASES[name]]


def pretrain_settings(wildcards, resources):
    """The `pretrain` config sections a method needs, with a wall-clock stop before the job's time limit.

    The trainer stops `stop_margin_minutes` before the job's runtime so that its
    last checkpoint is written by the trainer, not lost to the scheduler's kill.
    """
    section = config["pretrain"]
    settings = {key: section[key] for key in ("train", "encoder", wildcards.method)}
    if resources.runtime and settings["train"]["max_wall_seconds"] is None:
        minutes = max(resources.runtime - section["stop_margin_minutes"], 1)
        settings["train"] = {**settings["train"], "max_wall_seconds": minutes * 60}
    return settings


def pretrain_outputs():
    outputs = [f"{RESULTS}/pretrain/{method}/encoder.pt" for method in METHODS]
    outputs += [f"{RESULTS}/pretrain/{method}/final.pt" for method in TRAINED_METHODS]
    outputs += [f"{RESULTS}/pretrain/{method}/reconstruction.png" for method in TRAINED_METHODS if method in ("mim", "mim_hier")]
    return outputs


def all_targets():
    return manifests() + proposal_recall_tables() + pretrain_outputs()


def gpu_resources():
    """Resources of a job that wants GPUs, as config cluster.gpu_request says; use as `resources: **gpu_resources()`.

    `gpu=N` makes the SLURM plugin pass --gpus=N; `gres="gpu:N"` passes
    --gres=gpu:N, for clusters that reject --gpus. Nothing when gpus_per_job is 0.
    """
    n = CLUSTER["gpus_per_job"]
    if n == 0:
        return {}
    return {"gpu": n} if CLUSTER["gpu_request"] == "gpus" else {"gres": f"gpu:{n}"}


def snapshot_paths():
    """What `snapshot` versions with DVC, upstream first: every dataset's raw data, then the outputs worth keeping.

    A stage whose outputs are worth keeping appends them here (checkpoints
    under results/pretrain, tables under results/tables); caches that are cheap
    to recompute (standardized cases, proposals) stay out.
    """
    raw = [_dataset_root(name) for name in DATASETS]
    tables = [f"{RESULTS}/{name}/{file}" for name in DATASETS for file in ("manifest.parquet", "skipped.csv")]
    return raw + tables + [str(provenance_path(manifest)) for manifest in manifests()]
