import json
from pathlib import Path

from snakemake.utils import validate

from mass_core.datasets import class_names, list_cases
from mass_core.evaluate.aggregate import TABLES
from mass_core.evaluate.subsets import finetune_seeds
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


EVALUATION = config["evaluation"]
FINETUNE_SEEDS = finetune_seeds(EVALUATION["label_fractions"], EVALUATION["seeds"], EVALUATION["seeds_by_fraction"])

EVALUATION_DIR = f"{RESULTS}/evaluation"
TABLES_DIR = f"{RESULTS}/tables"
PLOTS_DIR = f"{RESULTS}/plots"
# Labeled datasets to evaluate on; an empty list means every configured dataset.
EVAL_DATASETS = EVALUATION["datasets"] or list(DATASETS)
# Methods whose final.pt holds an in-context model, i.e. that segment without training.
INCONTEXT_METHODS = [m for m in METHODS if m == "mass"]


def fraction_label(fraction):
    """Label fraction as it appears in paths: 0.1 -> "0.1", 1.0 -> "1"."""
    return f"{float(fraction):g}"


def pretrained_encoder(wildcards):
    # scratch too: its encoder.pt is the seeded random initialisation (rule init_scratch).
    return f"{RESULTS}/pretrain/{wildcards.method}/encoder.pt"


def finetune_run(dataset, method, fraction, seed):
    return f"{EVALUATION_DIR}/{dataset}/finetune/{method}/fraction_{fraction_label(fraction)}/seed_{seed}"


def finetune_metrics():
    return [
        f"{finetune_run(d, m, f, s)}/metrics.parquet"
        for d in EVAL_DATASETS
        for m in METHODS
        for f in EVALUATION["label_fractions"]
        for s in FINETUNE_SEEDS[float(f)]
    ]


def fewshot_metrics():
    return [
        f"{EVALUATION_DIR}/{d}/fewshot/{m}/k_{k}/seed_{s}/metrics.parquet"
        for d in EVAL_DATASETS
        for m in INCONTEXT_METHODS
        for k in EVALUATION["fewshot_k"]
        for s in EVALUATION["seeds"]
    ]


def probe_metrics():
    return [
        f"{EVALUATION_DIR}/{d}/probe/{m}/seed_{s}/metrics.parquet"
        for d in EVAL_DATASETS
        for m in METHODS
        for s in EVALUATION["seeds"]
    ]


def example_specs():
    """Per dataset: the test predictions of every method at the smallest label fraction and first seed."""
    fraction = min(EVALUATION["label_fractions"])
    seed = FINETUNE_SEEDS[float(fraction)][0]
    return {
        d: {
            "manifest": f"{RESULTS}/{d}/manifest.parquet",
            "predictions": {m: f"{finetune_run(d, m, fraction, seed)}/predictions.npz" for m in METHODS},
            "title": f"finetuned on {float(fraction) * 100:g}% of the labels, seed {seed}",
            "out": f"{PLOTS_DIR}/examples_{d}.png",
        }
        for d in EVAL_DATASETS
    }


def example_inputs():
    specs = example_specs().values()
    return [s["manifest"] for s in specs] + [p for s in specs for p in s["predictions"].values()]


def evaluation_outputs_dirs():
    return [EVALUATION_DIR, TABLES_DIR, PLOTS_DIR]


def evaluation_targets():
    tables = [f"{TABLES_DIR}/{name}.{ext}" for name in TABLES for ext in ("parquet", "csv", "md")]
    plots = [f"{PLOTS_DIR}/label_efficiency.png", f"{PLOTS_DIR}/fewshot_dice.png"]
    return tables + plots + [f"{PLOTS_DIR}/examples_{d}.png" for d in EVAL_DATASETS]


def all_targets():
    return manifests() + proposal_recall_tables() + pretrain_outputs() + evaluation_targets()


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
    """What `snapshot` versions with DVC, upstream first: every dataset's raw data, then every output folder.

    Each dataset's folder (standardized cases, proposals, manifest) is versioned
    with the checkpoints and tables: were it left out, a pulled run would
    rebuild it and Snakemake would then retrain everything downstream of it.
    """
    raw = [_dataset_root(name) for name in DATASETS]
    return raw + [f"{RESULTS}/{name}" for name in DATASETS] + [f"{RESULTS}/pretrain"] + evaluation_outputs_dirs()
