import json
import os
import sys
from pathlib import Path

from jsonschema import ValidationError
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from mass_core import slurm_resources
from mass_core.config_errors import config_error, dataset_selection
from mass_core.datasets import class_names, list_dataset, with_data_root
from mass_core.evaluate.aggregate import TABLES
from mass_core.evaluate.paper_tables import PAPER_TABLES
from mass_core.evaluate.subsets import Budget, finetune_seeds, study_budgets
from mass_core.pretrain.launch import LAUNCH_KEYS
from mass_core.pretrain.run import PRETEXT_TASKS, SCRATCH, check_method_names, finetune_rows, load_method_modules
from mass_core.pretrain.trainer import rank_batch, snapshot_path
from mass_core.provenance import provenance_path
from mass_core.standardize import dataset_settings

# Datasets named by the user's --configfile/--config replace the embedded
# default's instead of joining them: merged, a config for one's own scans would
# also generate, standardize and pretrain on the demo's phantom.
_user_config = workflow.config_settings.overwrite_config or {}
if "datasets" in _user_config:
    config["datasets"] = _user_config["datasets"]

try:
    validate(config, schema="../schemas/config.schema.yaml")
except WorkflowError as err:
    # Snakemake's message dumps the schema and the config; the jsonschema
    # error it was raised from says in one line which key is wrong.
    if not isinstance(err.__context__, ValidationError):
        raise
    sys.exit(config_error(err.__context__))

RESULTS = config["results"]
CLUSTER = config["cluster"]
ENV = "../envs/mass.yaml"
# Per-case rules (standardize, propose) join this group, so that on a cluster
# one job runs several cases (the profile's group-components says how many)
# instead of flooding the scheduler; local runs ignore groups.
CASE_GROUP = "cases" if CLUSTER["group_cases"] else None


def _dataset_root(name):
    # A relative root is taken from the working directory, like every other path.
    return DATASETS[name]["root"]


def _or_exit(prefix, make, *args):
    """`make(*args)`; a ValueError (bad dataset or config) stops the run with one line, `prefix` + its message.

    Without this Snakemake prints the exception under `ValueError in file
    .../common.smk, line <n>:` with a traceback through this file.
    """
    try:
        return make(*args)
    except ValueError as err:
        sys.exit(f"{prefix}{err}")


# Dataset roots with {data_root} (config/paper.yaml) filled in.
DATASETS = _or_exit("config error: ", with_data_root, config["datasets"], config["data_root"] or os.environ.get("MASS_DATA_ROOT", ""))


wildcard_constraints:
    dataset="|".join(DATASETS),
    case=r"[^/]+",


LISTINGS = {name: _or_exit(f"dataset {name!r}: ", list_dataset, spec) for name, spec in DATASETS.items()}
CASES = {name: {case.case_id: case for case in listing.cases} for name, listing in LISTINGS.items()}
# Per dataset: case folder -> why the listing left it out (a recipe's missing file).
LEFT_OUT = {name: {row.case_id: row.reason for row in listing.skipped} for name, listing in LISTINGS.items()}
# Per dataset: the standardize section with the dataset's own values over it.
STANDARDIZE = {
    name: _or_exit(
        f"config error: datasets.{name}.standardize: ", dataset_settings, config["standardize"], spec.get("standardize", {})
    )
    for name, spec in DATASETS.items()
}


def case_source(wildcards):
    return CASES[wildcards.dataset][wildcards.case]


def standardize_inputs(wildcards):
    case = case_source(wildcards)
    inputs = {"image": str(case.image)}
    if case.label is not None:
        inputs["label"] = str(case.label)
    if case.label_parts:
        inputs["label_parts"] = [str(path) for _, path in case.label_parts]
    if case.crop_with:
        inputs["crop_with"] = [str(path) for path in case.crop_with]
    return inputs


def standardized_metas(wildcards):
    return [f"{RESULTS}/{wildcards.dataset}/standardized/{cid}/meta.json" for cid in CASES[wildcards.dataset]]


def case_metas(wildcards):
    """The standardized cases' meta.json and those of the case folders the listing left out (usually none)."""
    left_out = [f"{RESULTS}/{wildcards.dataset}/listing/{cid}/meta.json" for cid in LEFT_OUT[wildcards.dataset]]
    return standardized_metas(wildcards) + left_out


def listing_reason(wildcards):
    return LEFT_OUT[wildcards.dataset][wildcards.case]


def case_table(wildcards):
    """The dataset's own case table (under its root) and a split table (from the working directory), where given."""
    spec = DATASETS[wildcards.dataset]
    tables = [str(Path(spec["root"]) / spec["class_table"])] if spec.get("class_table") else []
    return tables + ([spec["split_table"]] if spec.get("split_table") else [])


def phantom_files(name):
    root = Path(DATASETS[name]["root"])
    files = {"table": root / "classes.csv", "info": root / "dataset.json"}
    images = [str(root / "images" / f"{cid}.nii.gz") for cid in CASES[name]]
    labels = [str(root / "labels" / f"{cid}.nii.gz") for cid in CASES[name]]
    return {"images": images, "labels": labels, **{k: str(v) for k, v in files.items()}}


def manifests():
    return [f"{RESULTS}/{name}/manifest.parquet" for name in DATASETS]


PRETRAIN_DATASETS = _or_exit(
    "config error: ", dataset_selection, config["pretrain"]["datasets"], "pretrain.datasets", DATASETS
) or list(DATASETS)
# The pretext methods come from the registry (mass_core.pretrain.run.PRETEXT_TASKS),
# which modules named in pretrain.method_modules extend; the schema cannot list them.
METHOD_MODULES = config["pretrain"].get("method_modules", [])
_or_exit("config error: pretrain.method_modules: ", load_method_modules, METHOD_MODULES)
METHODS = config["pretrain"]["methods"]
_or_exit("config error: ", check_method_names, METHODS)
TRAINED_METHODS = [m for m in METHODS if m != SCRATCH]
# Processes per node and nodes of a pretraining job. They reach the job as
# resources, not params: the batch is global, so they do not change the weights,
# and changing them must not rerun anything.
PRETRAIN_PROCESSES = config["pretrain"]["processes"]
PRETRAIN_NODES = config["pretrain"]["nodes"]
_or_exit("config error: ", rank_batch, config["pretrain"]["train"]["batch_size"], PRETRAIN_PROCESSES * PRETRAIN_NODES)


def method_pattern(wanted=lambda entry: True):
    """Wildcard pattern of the registered pretext methods whose registry entry satisfies `wanted`."""
    return "|".join(name for name, entry in PRETEXT_TASKS.items() if wanted(entry))


def proposal_summaries(wildcards):
    return [f"{RESULTS}/{wildcards.dataset}/proposals/{cid}/summary.json" for cid in CASES[wildcards.dataset]]


def proposal_recall_tables():
    # Proposals serve pretraining: a dataset outside it (e.g. classification only) gets none.
    return [f"{RESULTS}/{name}/proposals/recall.parquet" for name in PRETRAIN_DATASETS]


def pretrain_manifests():
    return [f"{RESULTS}/{name}/manifest.parquet" for name in PRETRAIN_DATASETS]


def pretrain_proposals(wildcards):
    # Only methods that learn from proposals wait for them; the others start as soon as the manifests exist.
    if not PRETEXT_TASKS[wildcards.method].needs_proposals:
        return []
    return [f"{RESULTS}/{name}/proposals/{cid}/summary.json" for name in PRETRAIN_DATASETS for cid in CASES[name]]


def pretrain_settings(wildcards, resources):
    """The `pretrain` config sections a method needs, with a wall-clock stop before the job's time limit.

    The trainer stops `stop_margin_minutes` before the job's runtime so that its
    last checkpoint is written by the trainer, not lost to the scheduler's kill.
    """
    section = config["pretrain"]
    own = PRETEXT_TASKS[wildcards.method].section
    # method_modules only when set, so that the params of existing runs (a rerun trigger) stay as they were.
    keys = ("train", "encoder", *([own] if own else []), *(["method_modules"] if METHOD_MODULES else []))
    settings = {key: section[key] for key in keys}
    weights = [DATASETS[name]["pretrain_weight"] for name in PRETRAIN_DATASETS]
    # Only when they differ, so that the params of unweighted runs (a rerun trigger) stay as they were.
    if len(set(weights)) > 1:
        settings["dataset_weights"] = weights
    if resources.runtime and settings["train"]["max_wall_seconds"] is None:
        minutes = max(resources.runtime - section["stop_margin_minutes"], 1)
        settings["train"] = {**settings["train"], "max_wall_seconds": minutes * 60}
    return settings


def pretrain_outputs():
    outputs = [f"{RESULTS}/pretrain/{method}/encoder.pt" for method in METHODS]
    outputs += [f"{RESULTS}/pretrain/{method}/final.pt" for method in TRAINED_METHODS]
    outputs += [f"{RESULTS}/pretrain/{method}/reconstruction.png" for method in TRAINED_METHODS if PRETEXT_TASKS[method].reconstruction_figure]
    outputs += [f"{RESULTS}/pretrain/{method}/training_curves.png" for method in TRAINED_METHODS]
    return outputs


EVALUATION = config["evaluation"]
# Label budgets in their sort order: case counts ascending, then fractions ascending.
BUDGETS = _or_exit("config error: ", study_budgets, EVALUATION["label_fractions"], EVALUATION["label_counts"])
FINETUNE_SEEDS = _or_exit("config error: evaluation.", finetune_seeds, BUDGETS, EVALUATION["seeds"],
                          EVALUATION["seeds_by_fraction"], EVALUATION["seeds_by_count"])

EVALUATION_DIR = f"{RESULTS}/evaluation"
TABLES_DIR = f"{RESULTS}/tables"
# The MASS paper's published numbers, shown beside ours in the paper-shaped tables.
PUBLISHED_NUMBERS = str(Path(workflow.basedir).parent / "config" / "published.csv")
PLOTS_DIR = f"{RESULTS}/plots"
# Datasets to evaluate on; an empty list means every dataset with a labeled
# case (an unlabeled pretraining corpus has nothing to finetune or score on).
EVAL_DATASETS = _or_exit(
    "config error: ", dataset_selection, EVALUATION["datasets"], "evaluation.datasets", DATASETS
) or [d for d in DATASETS if any(c.labeled for c in CASES[d].values())]
# Each evaluation's own datasets (the paper's in-context study covers five, its
# classification one); empty lists mean the evaluation datasets.
FINETUNE_DATASETS, FEWSHOT_DATASETS, PROBE_DATASETS = (
    _or_exit("config error: ", dataset_selection, EVALUATION[f"{kind}_datasets"], f"evaluation.{kind}_datasets", DATASETS)
    or EVAL_DATASETS
    for kind in ("finetune", "fewshot", "probe")
)
# Methods whose final.pt holds an in-context model, i.e. that segment without training.
INCONTEXT_METHODS = [m for m in TRAINED_METHODS if PRETEXT_TASKS[m].in_context]


# Finetuned rows, each with its pretraining method and whether the whole in-context model is
# finetuned (MASS-FT, row "mass") or an encoder (row "mass_encoder" and every other method).
FINETUNE_ROWS = finetune_rows(METHODS, EVALUATION["mass_finetune"])
FINETUNE_METHODS = list(FINETUNE_ROWS)

# Row order of the tables and plots.
TABLE_METHODS = list(dict.fromkeys(METHODS + FINETUNE_METHODS))


def pretrained_encoder(wildcards):
    # scratch too: its encoder.pt is the seeded random initialisation (rule init_scratch).
    return f"{RESULTS}/pretrain/{wildcards.method}/encoder.pt"


def finetune_whole_model(wildcards):
    """Whether a finetuning row trains the whole in-context model (MASS-FT) rather than an encoder."""
    return FINETUNE_ROWS[wildcards.method][1]


def finetune_start(wildcards):
    """What a finetuning run starts from: MASS-FT the whole in-context checkpoint, every other row an encoder."""
    method, whole = FINETUNE_ROWS[wildcards.method]
    return f"{RESULTS}/pretrain/{method}/{'final.pt' if whole else 'encoder.pt'}"


def finetune_run(dataset, method, budget, seed):
    return f"{EVALUATION_DIR}/{dataset}/finetune/{method}/{budget.token}/seed_{seed}"


def finetune_metrics():
    return [
        f"{finetune_run(d, m, b, s)}/metrics.parquet"
        for d in FINETUNE_DATASETS
        for m in FINETUNE_METHODS
        for b in BUDGETS
        for s in FINETUNE_SEEDS[b]
    ]


def fewshot_metrics():
    return [
        f"{EVALUATION_DIR}/{d}/fewshot/{m}/k_{k}/seed_{s}/metrics.parquet"
        for d in FEWSHOT_DATASETS
        for m in INCONTEXT_METHODS
        for k in EVALUATION["fewshot_k"]
        for s in EVALUATION["seeds"]
    ]


def probe_metrics():
    return [
        f"{EVALUATION_DIR}/{d}/probe/{m}/seed_{s}/metrics.parquet"
        for d in PROBE_DATASETS
        for m in METHODS
        for s in EVALUATION["seeds"]
    ]


def example_specs():
    """Per dataset: the test predictions of every method at the smallest budget and its first seed.

    The smallest budget is the smallest case count if there is one, else the smallest fraction.
    """
    budget = BUDGETS[0]
    seed = FINETUNE_SEEDS[budget][0]
    return {
        d: {
            "manifest": f"{RESULTS}/{d}/manifest.parquet",
            "predictions": {m: f"{finetune_run(d, m, budget, seed)}/predictions.npz" for m in FINETUNE_METHODS},
            "title": f"finetuned, labels: {budget.label}, seed {seed}",
            "out": f"{PLOTS_DIR}/examples_{d}.png",
        }
        for d in FINETUNE_DATASETS
    }


def example_inputs():
    specs = example_specs().values()
    return [s["manifest"] for s in specs] + [p for s in specs for p in s["predictions"].values()]


# The learning curve of the in-context methods (MASS): their snapshots and final checkpoints, evaluated alike.
CURVE = EVALUATION["learning_curve"]
PRETRAIN_STEPS = config["pretrain"]["train"]["steps"]
SNAPSHOT_STEPS = sorted(config["pretrain"]["train"]["snapshot_steps"])
CURVE_STEPS = [*SNAPSHOT_STEPS, PRETRAIN_STEPS] if SNAPSHOT_STEPS and INCONTEXT_METHODS else []
CURVE_BUDGET = f"cases_{CURVE['label_count']}"


def curve_checkpoint(wildcards):
    """The method's training checkpoint after `step` steps: a snapshot, or final.pt at the last step."""
    step = int(wildcards.step)
    if step == PRETRAIN_STEPS:
        return f"{RESULTS}/pretrain/{wildcards.method}/final.pt"
    return str(snapshot_path(f"{RESULTS}/pretrain/{wildcards.method}", step))


def _curve_fewshot(dataset, method, step, seed):
    # The final model's run is the main few-shot run when the study has it.
    if step == PRETRAIN_STEPS and CURVE["k"] in EVALUATION["fewshot_k"] and seed in EVALUATION["seeds"]:
        return f"{EVALUATION_DIR}/{dataset}/fewshot/{method}/k_{CURVE['k']}/seed_{seed}/metrics.parquet"
    return f"{EVALUATION_DIR}/{dataset}/curve/step_{step}/fewshot/{method}/k_{CURVE['k']}/seed_{seed}/metrics.parquet"


def _curve_finetune(dataset, method, step, seed):
    # Likewise the final model's MASS-FT run at the curve's budget.
    budget = Budget.parse(CURVE_BUDGET)
    if step == PRETRAIN_STEPS and method in FINETUNE_METHODS and seed in FINETUNE_SEEDS.get(budget, []):
        return f"{finetune_run(dataset, method, budget, seed)}/metrics.parquet"
    return f"{EVALUATION_DIR}/{dataset}/curve/step_{step}/finetune/{method}/{CURVE_BUDGET}/seed_{seed}/metrics.parquet"


def curve_runs():
    """Per pretraining step, the metrics files of its in-context and its MASS-FT runs."""
    # Datasets of both the few-shot and the finetuning study: the curve shows both.
    runs = [(d, m, s) for d in FEWSHOT_DATASETS if d in FINETUNE_DATASETS for m in INCONTEXT_METHODS for s in CURVE["seeds"]]
    fewshot = {step: [_curve_fewshot(d, m, step, s) for d, m, s in runs] for step in CURVE_STEPS}
    finetune = {step: [_curve_finetune(d, m, step, s) for d, m, s in runs] for step in CURVE_STEPS}
    return fewshot, finetune


def curve_targets():
    return [f"{TABLES_DIR}/learning_curve.{ext}" for ext in ("parquet", "csv", "md")] + [f"{PLOTS_DIR}/learning_curve.png"] if CURVE_STEPS else []


def evaluation_outputs_dirs():
    return [EVALUATION_DIR, TABLES_DIR, PLOTS_DIR]


def evaluation_targets():
    tables = [f"{TABLES_DIR}/{name}.{ext}" for name in TABLES for ext in ("parquet", "csv", "md")]
    tables += [f"{TABLES_DIR}/{name}.{ext}" for name in PAPER_TABLES for ext in ("csv", "md")]
    plots = [f"{PLOTS_DIR}/label_efficiency.png", f"{PLOTS_DIR}/fewshot_dice.png"]
    return tables + plots + [f"{PLOTS_DIR}/examples_{d}.png" for d in FINETUNE_DATASETS] + curve_targets()


def all_targets():
    return manifests() + proposal_recall_tables() + pretrain_outputs() + evaluation_targets()


def gpu_resources(n=CLUSTER["gpus_per_job"]):
    """Resources of a job that wants `n` GPUs, as config cluster.gpu_request says; use as `resources: **gpu_resources()`.

    See mass_core.slurm_resources for what the SLURM plugin makes of them.
    """
    return slurm_resources.gpu_resources(n, CLUSTER["gpu_request"])


def pretrain_resources():
    """Resources of a pretraining job: `nproc_per_node` for its launcher, and its nodes and GPUs."""
    return slurm_resources.pretrain_resources(PRETRAIN_PROCESSES, PRETRAIN_NODES, CLUSTER["gpus_per_job"], CLUSTER["gpu_request"])


def scratch_settings():
    """The `pretrain` section for init_scratch, less the launch keys, which do not change any weights."""
    return {key: value for key, value in config["pretrain"].items() if key not in LAUNCH_KEYS}


def snapshot_paths():
    """What `snapshot` versions with DVC, upstream first: every dataset's raw data, then every output folder.

    Each dataset's folder (standardized cases, proposals, manifest) is versioned
    with the checkpoints and tables: were it left out, a pulled run would
    rebuild it and Snakemake would then retrain everything downstream of it.
    """
    raw = [_dataset_root(name) for name in DATASETS]
    return raw + [f"{RESULTS}/{name}" for name in DATASETS] + [f"{RESULTS}/pretrain"] + evaluation_outputs_dirs()
