"""The Snakemake workflow: dry runs, lint, and real runs on tiny configs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
import yaml

from mass_core.models.reconstruction import ReconstructionConfig, ReconstructionNet
from mass_core.pretrain.checkpoint import load_checkpoint
from replicas import assert_weights_close
from volumes import make_image

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile")]




def _repository_state() -> list[str] | None:
    """Changed, untracked and ignored files of the repository (bytecode caches aside); ``None`` outside git."""
    result = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=REPO,
                            capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return sorted(line for line in result.stdout.splitlines() if "__pycache__" not in line and ".pytest_cache" not in line)


@pytest.fixture(scope="module", autouse=True)
def repository_untouched():
    """The workflow tests run Snakemake in temporary folders: the repository gains no logs, results or .snakemake."""
    before = _repository_state()
    yield
    assert _repository_state() == before


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A working directory holding the configs that the Snakefile and the tests name by relative path."""
    work = tmp_path / "work"
    shutil.copytree(REPO / "config", work / "config")
    (work / ".test").mkdir()
    shutil.copy(REPO / ".test" / "config.yaml", work / ".test" / "config.yaml")
    return work


def snakemake(*args: str, cwd: Path, check: bool = True, pythonpath: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    """Run Snakemake in ``cwd`` with the repository (and ``pythonpath``) importable."""
    path = [*map(str, pythonpath), str(REPO), os.environ.get("PYTHONPATH")]
    result = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))})
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.mark.parametrize("configfile", [None, ".test/config.yaml"])
def test_dry_run_plans_every_stage(configfile, workdir):
    extra = ["--configfile", configfile] if configfile else []
    out = snakemake("--dry-run", "--forceall", "all", *extra, cwd=workdir).stdout
    n_cases = yaml.safe_load((REPO / (configfile or "config/config.yaml")).read_text())["datasets"]["phantom"]["phantom"]["n_cases"]
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert counts["standardize"] == n_cases and counts["manifest"] == 1


def test_lint_is_clean(workdir):
    result = snakemake("--lint", cwd=workdir)
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_schema_rejects_unknown_keys(tmp_path, workdir):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"standardize": {"spacnig": [1, 1, 1]}}))
    result = snakemake("-n", "all", "--configfile", str(bad), cwd=workdir, check=False)
    assert result.returncode != 0 and "spacnig" in result.stdout + result.stderr


# Snakemake's own notice whenever --configfile adds to config/config.yaml, printed before the workflow is read.
CONFIG_NOTICE = "Config file config/config.yaml is extended by additional config specified via the command line."


def _own_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The non-empty lines of a failed run's output, less Snakemake's notice about merged config files."""
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return [line for line in lines if line != CONFIG_NOTICE]


def planned_jobs(workdir: Path, *extra_configs: str) -> dict[str, int]:
    """Jobs per rule that a dry run of the tiny config (merged with ``extra_configs``) plans."""
    out = snakemake("--dry-run", "all", "--configfile", ".test/config.yaml", *extra_configs, cwd=workdir).stdout
    rows = [line.split() for line in out.splitlines()]
    return {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit() and row[0] not in ("total", "all")}


def test_seeds_by_fraction_repeat_only_the_named_fraction(tmp_path, workdir):
    override = tmp_path / "seeds.yaml"
    override.write_text(yaml.safe_dump({"evaluation": {"label_fractions": [0.5, 1.0], "label_counts": [], "seeds": [0], "seeds_by_fraction": {0.5: [0, 1, 2]}}}))
    out = snakemake("--dry-run", "--forceall", "all", "--configfile", ".test/config.yaml", str(override), cwd=workdir).stdout
    runs = set(re.findall(r"finetune/([^,\s]+)/metrics\.parquet", out))
    assert {r for r in runs if r.startswith("scratch/")} == {"scratch/fraction_0.5/seed_0", "scratch/fraction_0.5/seed_1",
                                                             "scratch/fraction_0.5/seed_2", "scratch/fraction_1/seed_0"}


def test_label_counts_add_case_budget_runs(tmp_path, workdir):
    override = tmp_path / "counts.yaml"
    override.write_text(yaml.safe_dump({"evaluation": {"label_fractions": [0.5, 1.0], "seeds": [0], "label_counts": [1, 2], "seeds_by_count": {1: [0, 1]}}}))
    out = snakemake("--dry-run", "--forceall", "all", "--configfile", ".test/config.yaml", str(override), cwd=workdir).stdout
    runs = set(re.findall(r"finetune/([^,\s]+)/metrics\.parquet", out))
    assert {r for r in runs if r.startswith("scratch/")} == {"scratch/cases_1/seed_0", "scratch/cases_1/seed_1", "scratch/cases_2/seed_0",
                                                             "scratch/fraction_0.5/seed_0", "scratch/fraction_1/seed_0"}
    # The example figure shows the smallest budget: one labeled case.
    assert "finetune/mass/cases_1/seed_0/predictions.npz" in out


@pytest.mark.parametrize("evaluation, message", [
    ({"label_fractions": [], "label_counts": []},
     "config error: evaluation: label_fractions and label_counts are both empty; give at least one label budget"),
    ({"label_fractions": [0.5, 1.0], "seeds_by_fraction": {0.3: [0, 1]}},
     "config error: evaluation.seeds_by_fraction: 0.3 is not one of the study's fraction budgets [0.5, 1.0]"),
    ({"label_counts": [1], "seeds_by_count": {5: [0]}},
     "config error: evaluation.seeds_by_count: 5 is not one of the study's cases budgets [1]"),
])
def test_bad_label_budgets_stop_the_dag_with_one_line(tmp_path, evaluation, message, workdir):
    override = tmp_path / "budgets.yaml"
    override.write_text(yaml.safe_dump({"evaluation": evaluation}))
    result = snakemake("--dry-run", "all", "--configfile", ".test/config.yaml", str(override), cwd=workdir, check=False)
    assert result.returncode != 0 and _own_lines(result) == [message]


def test_a_registered_task_from_outside_gets_its_jobs(tmp_path, workdir):
    # tests/pretrain/toy_pretext.py: rotation prediction, one registry entry, no in-context model.
    override = tmp_path / "toy.yaml"
    override.write_text(yaml.safe_dump({"pretrain": {"method_modules": ["toy_pretext"], "methods": ["scratch", "rotation"]}}))
    out = snakemake("--dry-run", "--forceall", "all", "--configfile", ".test/config.yaml", str(override), cwd=workdir,
                    pythonpath=(REPO / "tests" / "pretrain",)).stdout
    jobs = {row[0]: int(row[1]) for row in (line.split() for line in out.splitlines()) if len(row) == 2 and row[1].isdigit()}
    assert jobs["pretrain"] == 1 and jobs["training_curves"] == 1 and "results/pretrain/rotation/final.pt" in out
    # Finetuned at both budgets and probed, like every encoder; it neither waits for proposals nor gets in-context jobs.
    assert {r for r in re.findall(r"finetune/([^,\s]+)/metrics\.parquet", out) if r.startswith("rotation/")} == {
        "rotation/cases_1/seed_0", "rotation/fraction_1/seed_0"}
    assert "probe/rotation/seed_0/metrics.parquet" in out
    pretrain_job = next(block for block in out.split("\n\n") if "rule pretrain:" in block)
    assert "proposals" not in pretrain_job.split("output:")[0]
    assert not {"incontext_fewshot", "curve_fewshot", "curve_finetune", "learning_curve", "reconstruction_figure"} & set(jobs)


def test_an_unknown_method_stops_the_dag_with_one_line(tmp_path, workdir):
    override = tmp_path / "methods.yaml"
    override.write_text(yaml.safe_dump({"pretrain": {"methods": ["scratch", "rotation"]}}))
    result = snakemake("--dry-run", "all", "--configfile", ".test/config.yaml", str(override), cwd=workdir, check=False)
    assert result.returncode != 0 and _own_lines(result) == [
        "config error: pretrain.methods[1]: 'rotation' is not one of ['mass', 'mim', 'mim_hier', 'scratch'] "
        "(a method defined elsewhere needs its module in pretrain.method_modules)"]


@pytest.mark.slow
def test_tiny_config_runs_every_stage_and_caches(tmp_path, workdir):
    snakemake("--cores", "2", "--forcerun", "manifest", "all", "--configfile", ".test/config.yaml", cwd=workdir)
    results = workdir / ".test/results"
    manifest = pd.read_parquet(results / "phantom/manifest.parquet")
    assert len(manifest) == 6 and set(manifest["split"]) == {"train", "val", "test"}
    for row in manifest.itertuples():
        # The manifest's paths are relative to Snakemake's working directory.
        image = np.load(workdir / row.image, mmap_mode="r")
        label = np.load(workdir / row.label, mmap_mode="r")
        assert image.shape == label.shape == (row.shape_x, row.shape_y, row.shape_z)
        assert abs(float(image[label > 0].mean())) < 3 and set(np.unique(label)) >= {0, 1, 2, 3, 4, 5, 6}
    recall = pd.read_parquet(results / "phantom/proposals/recall.parquet")
    assert not recall.empty
    for method in ("scratch", "mim", "mim_hier", "mass"):
        assert (results / f"pretrain/{method}/encoder.pt").is_file()
    dice = pd.read_csv(results / "tables/segmentation_dice.csv")
    assert not dice.empty
    # A second run has nothing to do.
    assert planned_jobs(workdir) == {}
    # Changing a proposal parameter reruns the proposals and what depends on
    # them (MASS and its evaluations, the tables), nothing upstream and no baseline.
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"proposals": {"sigma_mm": 2.0}}))
    planned = planned_jobs(workdir, str(override))
    assert planned["propose"] == 6 and planned["proposal_recall"] == 1 and planned["pretrain"] == 1
    assert not {"standardize", "manifest", "generate_phantom", "init_scratch", "reconstruction_figure"} & set(planned)
    # MASS-FT and MASS's encoder at 2 label budgets; MASS's learning curve (one snapshot; the last point reuses the main runs).
    assert planned["finetune_seg"] == 4 and planned["linear_probe"] == 1
    assert planned["curve_finetune"] == 1 and planned["curve_fewshot"] == 1 and planned["learning_curve"] == 1


def _body(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    array = np.full((24, 24, 16), -1000, np.int16)
    array[4:20, 4:20, 3:13] = rng.integers(0, 100, size=(16, 16, 10))
    return array


@pytest.mark.slow
def test_bad_cases_are_skipped_and_reported_not_lost(tmp_path, workdir):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for cid in ("good_a", "good_b", "good_c"):
        sitk.WriteImage(make_image(_body(len(cid))), str(root / "images" / f"{cid}.nii.gz"))
    sitk.WriteImage(make_image(np.zeros((24, 24, 16), np.int16)), str(root / "images" / "flat.nii.gz"))
    sitk.WriteImage(make_image(_body(1)), str(root / "images" / "mislabeled.nii.gz"))
    sitk.WriteImage(make_image(np.zeros((24, 24, 15), np.uint8)), str(root / "labels" / "mislabeled.nii.gz"))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"results": str(tmp_path / "results"),
                                      "datasets": {"mixed": {"layout": "folder", "root": str(root), "modality": "CT"}}}))
    target = str(tmp_path / "results" / "mixed" / "manifest.parquet")
    snakemake("--cores", "2", target, "--configfile", str(config), cwd=workdir)
    manifest = pd.read_parquet(target)
    assert sorted(manifest["case_id"]) == ["good_a", "good_b", "good_c"]
    skipped = pd.read_csv(tmp_path / "results" / "mixed" / "skipped.csv").set_index("case_id")
    assert sorted(skipped.index) == ["flat", "mislabeled"]
    assert "constant" in skipped.loc["flat", "reason"] and "label size" in skipped.loc["mislabeled", "reason"]

    # With on_error: fail the same dataset stops with the reason in the job's log.
    strict = yaml.safe_load(config.read_text()) | {"standardize": {"on_error": "fail"}, "results": str(tmp_path / "strict")}
    config.write_text(yaml.safe_dump(strict))
    result = snakemake("--cores", "1", "--keep-going", str(tmp_path / "strict/mixed/manifest.parquet"), "--configfile", str(config), cwd=workdir, check=False)
    assert result.returncode != 0
    log = (workdir / "logs/standardize/mixed/flat.log").read_text()
    assert "case 'flat': image is constant" in log


def _dag_lines_of_one_dataset(tmp_path: Path, name: str, layout: str, workdir: Path) -> list[str]:
    """The output lines of a failed dry run of a config with one dataset at ``tmp_path/data``."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"results": str(tmp_path / "results"),
                                      "datasets": {name: {"layout": layout, "root": str(tmp_path / "data"), "modality": "CT"}}}))
    result = snakemake("-n", str(tmp_path / "results" / name / "manifest.parquet"), "--configfile", str(config), cwd=workdir, check=False)
    assert result.returncode != 0
    return _own_lines(result)


def test_file_name_unfit_for_a_wildcard_stops_the_dag_with_one_line(tmp_path, workdir):
    (tmp_path / "data" / "images").mkdir(parents=True)
    for name in ("ok.nii.gz", "scan{1}.nii.gz"):
        sitk.WriteImage(make_image(_body(0)), str(tmp_path / "data" / "images" / name))
    assert _dag_lines_of_one_dataset(tmp_path, "mixed", "folder", workdir) == [
        f"dataset 'mixed': {tmp_path / 'data' / 'images' / 'scan{1}.nii.gz'}: case id 'scan{{1}}' contains "
        "'{', '}'; case ids name output files, Snakemake wildcards and cluster jobs, so they may hold only "
        "ASCII letters, digits, '.', '_', '-' and '+', and start with a letter, digit or '_'; rename the file"]


def test_msd_entry_without_image_stops_the_dag_with_one_line(tmp_path, workdir):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dataset.json").write_text('{"training": [{"label": "./labelsTr/a.nii.gz"}]}')
    assert _dag_lines_of_one_dataset(tmp_path, "dec", "msd", workdir) == [
        f"dataset 'dec': {tmp_path / 'data' / 'dataset.json'}: training entry 0 (counting from 0) has no "
        '"image" path: {"label": "./labelsTr/a.nii.gz"}']


@pytest.mark.parametrize("override, message", [
    ({"pretrian": {"steps": 3}}, "config error: unknown key 'pretrian' at top level (did you mean 'pretrain'? allowed: cluster, data_root, "
                                 "datasets, evaluation, pretrain, proposals, results, splits, standardize)"),
    ({"standardize": {"spacing": [1.0, "wide", 1.0]}}, "config error: standardize.spacing[1]: 'wide' is not of type 'number'"),
    ({"evaluation": {"datasets": ["phantm"]}},
     "config error: evaluation.datasets names 'phantm', which is not under datasets (configured: phantom)"),
    ({"pretrain": {"datasets": ["phantom", "ct", "mr"]}},
     "config error: pretrain.datasets names 'ct', 'mr', which are not under datasets (configured: phantom)"),
    ({"pretrain": {"processes": 3}},
     "config error: pretrain.train.batch_size (2) is the global batch and must be a multiple of the number of processes (3)"),
])
def test_config_error_is_one_line_naming_the_key(tmp_path, override, message, workdir):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(override))
    result = snakemake("-n", "all", "--configfile", str(bad), cwd=workdir, check=False)
    assert result.returncode != 0 and _own_lines(result) == [message]


def test_a_config_naming_its_own_datasets_runs_on_those_alone(tmp_path, workdir):
    (tmp_path / "data" / "images").mkdir(parents=True)
    for i in range(3):
        sitk.WriteImage(make_image(_body(i)), str(tmp_path / "data" / "images" / f"scan{i}.nii.gz"))
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump({"results": str(tmp_path / "results"),
                                      "datasets": {"mine": {"layout": "folder", "root": str(tmp_path / "data"), "modality": "CT"}}}))
    out = snakemake("--dry-run", "all", "--configfile", str(config), cwd=workdir).stdout
    rows = [line.split() for line in out.splitlines()]
    jobs = {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit()}
    # The embedded default's phantom is neither generated nor standardized nor pretrained on.
    assert "generate_phantom" not in jobs and jobs["standardize"] == 3 and jobs["manifest"] == 1
    assert "phantom" not in out.replace("phantom.smk", "")


def test_a_datasets_own_standardize_settings_are_checked_when_the_jobs_are_built(tmp_path, workdir):
    override = tmp_path / "roi.yaml"
    override.write_text(yaml.safe_dump({"datasets": {"phantom": {"standardize": {"roi": "label_bx"}}}}))
    result = snakemake("-n", "all", "--configfile", ".test/config.yaml", str(override), cwd=workdir, check=False)
    assert result.returncode != 0 and _own_lines(result) == [
        "config error: datasets.phantom.standardize: roi must be one of ('body', 'label_box'), got 'label_bx'"]


def test_a_recipe_dataset_plans_a_standardize_job_per_case(tmp_path, workdir):
    for case in ("case_00000", "case_00001"):
        (tmp_path / "kits" / case).mkdir(parents=True)
        sitk.WriteImage(make_image(_body(0)), str(tmp_path / "kits" / case / "imaging.nii.gz"))
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump({"results": str(tmp_path / "results"),
                                      "datasets": {"kits": {"recipe": "kits", "root": str(tmp_path / "kits")}}}))
    out = snakemake("--dry-run", "all", "--configfile", str(config), cwd=workdir).stdout
    rows = [line.split() for line in out.splitlines()]
    jobs = {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit()}
    assert jobs["standardize"] == 2 and jobs["manifest"] == 1 and "generate_phantom" not in jobs
    # Nothing left out: no table of left-out folders, so the manifests of earlier runs keep their inputs.
    assert "listing_skipped" not in jobs


@pytest.mark.slow
def test_a_case_folder_the_recipe_cannot_use_is_reported_in_skipped_csv(tmp_path, workdir):
    kits = tmp_path / "kits"
    for case in ("case_00000", "case_00001"):
        (kits / case).mkdir(parents=True)
        sitk.WriteImage(make_image(_body(0)), str(kits / case / "imaging.nii.gz"))
    (kits / "case_00002").mkdir()
    sitk.WriteImage(make_image(np.zeros((24, 24, 16), np.uint8)), str(kits / "case_00002" / "segmentation.nii.gz"))
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump({"results": str(tmp_path / "results"),
                                      "datasets": {"kits": {"recipe": "kits", "root": str(kits)}}}))
    results = tmp_path / "results" / "kits"
    snakemake("--cores", "2", str(results / "manifest.parquet"), "--configfile", str(config), cwd=workdir)
    assert sorted(pd.read_parquet(results / "manifest.parquet")["case_id"]) == ["case_00000", "case_00001"]
    assert pd.read_csv(results / "skipped.csv", dtype=str).to_dict("records") == [
        {"case_id": "case_00002", "stage": "listing", "reason": "no case_00002/imaging.nii.gz"}]
    # With the file back the case is listed, standardized and joins the manifest.
    sitk.WriteImage(make_image(_body(2)), str(kits / "case_00002" / "imaging.nii.gz"))
    snakemake("--cores", "2", str(results / "manifest.parquet"), "--configfile", str(config), cwd=workdir)
    assert sorted(pd.read_parquet(results / "manifest.parquet")["case_id"]) == ["case_00000", "case_00001", "case_00002"]
    assert pd.read_csv(results / "skipped.csv").empty


# The encoder's convolutions carry biases that an InstanceNorm follows: their exact gradient is 0, and
# LAMB scales the float round-off that stands for it (which differs with the order of the sums) into
# full-size steps. They do not change what the network computes, so they are left out of the comparison
# of weights and covered by the comparison of its outputs.
NORMALISED_BIAS = re.compile(r"^encoder\..*conv\.bias$")


@pytest.mark.slow
def test_two_processes_launched_by_the_rule_match_one_process_with_the_same_global_batch(tmp_path, workdir):
    target = ".test/results/pretrain/mim/final.pt"

    def pretrain(processes: int):
        override = tmp_path / f"processes_{processes}.yaml"
        override.write_text(yaml.safe_dump({"pretrain": {"processes": processes, "train": {"device": "cpu"}}}))
        shutil.rmtree(workdir / ".test/results/pretrain/mim", ignore_errors=True)
        snakemake("--cores", "2", target, "--configfile", ".test/config.yaml", str(override), cwd=workdir)
        return load_checkpoint(workdir / target, "mim"), pd.read_csv(workdir / ".test/results/pretrain/mim/metrics.csv")

    two, two_metrics = pretrain(2)
    assert "torch.distributed.run --standalone --nnodes=1 --nproc-per-node=2" in (workdir / "logs/pretrain/mim.log").read_text()
    one, one_metrics = pretrain(1)
    assert two.step == one.step == yaml.safe_load((REPO / ".test/config.yaml").read_text())["pretrain"]["train"]["steps"]
    # The logged loss is that of the global batch, averaged over the ranks.
    np.testing.assert_allclose(two_metrics["loss"], one_metrics["loss"], rtol=0, atol=1e-5)
    crops = torch.linspace(-2, 2, 2 * 16 ** 3).reshape(2, 1, 16, 16, 16)
    hidden = (torch.arange(16 ** 3).reshape(1, 1, 16, 16, 16) % 3 == 0).expand(2, 1, 16, 16, 16)
    for weights in ("model", "ema"):
        a, b = getattr(two, weights), getattr(one, weights)
        assert_weights_close(a, b, 1e-5, weights, {key for key in b if NORMALISED_BIAS.match(key)})
        outputs = []
        for state in (a, b):
            net = ReconstructionNet(ReconstructionConfig.from_dict(one.model_config)).eval()
            net.load_state_dict(state)
            with torch.no_grad():
                outputs.append(net(crops, hidden).reconstruction)
        torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=1e-5)
