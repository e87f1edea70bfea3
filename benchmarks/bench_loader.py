"""Throughput of MASS task loading per data-loader worker, beside the training step it feeds.

Training draws every task with :meth:`MassTask.sample` in a data-loader
worker (one process, one thread) while the main process runs the step. This
benchmark times exactly that call on cases laid out as the pipeline writes
them (standardized ``image.npy`` read through mmap, a proposal store made by
the propose stage), and a few steps of the real trainer at the same crop, K
and batch with the demo model. It prints tasks/s per worker (and without
intensity augmentation, to show its share), what the configured
``train.num_workers`` supply, the step's samples/s and the workers needed to
keep the model fed, for two settings:

- ``demo``: ``config/config.yaml`` (phantom cases standardized at 2.5 mm,
  crop 32^3, K = 5, ``min_mask_voxels`` 300, ``far_query`` 0.5, batch 2);
- ``paper``: ``config/paper.yaml`` over it (CT-sized phantom volumes at
  1.5 mm, crop 128^3, K = 13, ``min_mask_voxels`` 256, batch 4). Its step is
  timed only on request (``--step-settings demo,paper``, best with
  ``--device cuda``): on one CPU thread a single 128^3 sample of the demo
  model took over 3 minutes and 9 GB.

Usage::

    python benchmarks/bench_loader.py [--settings demo,paper] [--tasks 40] [--steps 4] [--cache DIR] [--json out.json]

Cases are generated once and cached under ``--cache`` (default: a folder in
the system's temp dir); proposals of a CT-sized case take a minute or more.
Timings on the CPU are process CPU seconds (the loader's the best of
``--repeats`` rounds), so that other jobs on a shared machine count less.
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Mapping  # noqa: E402

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from mass_core.atomic import write_json, write_npy  # noqa: E402
from mass_core.phantom import PhantomParams, make_phantom  # noqa: E402
from mass_core.pretrain.mass import MassConfig, MassTask, StoreCase  # noqa: E402
from mass_core.pretrain.trainer import TrainConfig, train  # noqa: E402
from mass_core.proposals.generate import ProposalParams  # noqa: E402
from mass_core.proposals.stage import SUMMARY_FILE, propose_case  # noqa: E402
from mass_core.standardize import StandardizeParams, standardize_images  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# Per setting: the config files merged in order, the phantom it is drawn from (standardized with the
# setting's config), and the number of cases.
SETTINGS: dict[str, dict[str, Any]] = {
    # The demo dataset's phantom (config.yaml: 96 x 96 x 64 at 1.25 x 1.25 x 2 mm).
    "demo": {"config": ("config/config.yaml",), "phantom": PhantomParams(), "cases": 4},
    # A CT-sized field of view (540 x 450 x 375 mm at 1.5 mm): 232 x 194 x 250 voxels after the body crop.
    "paper": {"config": ("config/config.yaml", "config/paper.yaml"),
              "phantom": PhantomParams(shape=(360, 300, 250), spacing_mm=(1.5, 1.5, 1.5)), "cases": 2},
}


def _merged(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    # Snakemake's --configfile semantics: nested mappings merge, everything else is replaced.
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def load_config(files: tuple[str, ...]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for name in files:
        config = _merged(config, yaml.safe_load((REPO / name).read_text(encoding="utf-8")))
    return config


def _phantom_image(index: int, params: PhantomParams) -> sitk.Image:
    case = make_phantom(index, params)
    # SimpleITK arrays are (z, y, x); the phantom's are (x, y, z).
    image = sitk.GetImageFromArray(np.ascontiguousarray(case.image_hu.transpose(2, 1, 0)).astype(np.float32))
    image.SetSpacing(case.spacing_mm)
    image.SetOrigin(case.origin_mm)
    image.SetDirection(case.direction)
    return image


def prepare_cases(name: str, config: Mapping[str, Any], cache: Path) -> list[StoreCase]:
    """Standardize and propose the setting's phantom cases as the pipeline does, reusing ``cache``."""
    standardize = StandardizeParams.from_config({k: v for k, v in config["standardize"].items() if k != "on_error"})
    proposals = ProposalParams.from_config({k: v for k, v in config["proposals"].items() if k not in ProposalParams.OUTSIDE_KEYS})
    cases = []
    for index in range(SETTINGS[name]["cases"]):
        case_id = f"phantom_{index:03d}"
        folder = cache / name / case_id
        image_path = folder / "standardized" / "image.npy"
        if not (folder / "proposals" / SUMMARY_FILE).is_file():
            started = time.perf_counter()
            standardized = standardize_images(_phantom_image(index, SETTINGS[name]["phantom"]), None, case_id, "CT", standardize)
            write_npy(image_path, standardized.image)
            write_json(image_path.parent / "meta.json", standardized.meta)
            propose_case(image_path, folder / "proposals", case_id, proposals)
            print(f"{name}/{case_id}: {standardized.image.shape} prepared in {time.perf_counter() - started:.0f} s")
        cases.append(StoreCase(case_id, image_path, folder / "proposals"))
    return cases


def demo_model_task(cases: list[StoreCase], config: Mapping[str, Any]) -> MassTask:
    """MASS with the setting's sampler and the demo model (``config/config.yaml``'s encoder and ``mass.model``)."""
    demo = load_config(("config/config.yaml",))["pretrain"]
    mass = {**config["pretrain"]["mass"], "model": demo["mass"].get("model", {})}
    return MassTask(cases, MassConfig.from_config(demo["encoder"], mass))


def loader_rate(task: MassTask, batch: int, tasks: int, repeats: int) -> float:
    """Tasks/s of ``task.sample`` in this process (what one data-loader worker does), best of ``repeats``."""
    keys = [(i // batch, i % batch) for i in range(tasks)]
    task.sample(0, 10**6, 0)  # numba's cache and the page cache, out of the timings
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for step, index in keys:
            task.sample(0, step, index)
        best = min(best, time.process_time() - started)
    return tasks / best


def step_seconds(task: MassTask, config: Mapping[str, Any], steps: int, device: str) -> float:
    """Seconds of one step of the real trainer (loading its batch in-process included).

    The difference between a run of ``4 + steps`` steps and one of 4 (the
    one-cycle schedule's least), so that set-up, the first steps' allocations
    and the final checkpoint cancel. On the CPU in process CPU time, as the
    loader, so that other jobs on a shared machine count less; on a GPU in
    wall time.
    """
    values = {**config["pretrain"]["train"], "log_every": 1, "validate_every": 0, "num_workers": 0, "device": device, "max_wall_seconds": None}
    clock = time.process_time if device == "cpu" else time.perf_counter
    seconds = []
    for n in (4, 4 + steps):
        with tempfile.TemporaryDirectory() as out:
            started = clock()
            train(task, TrainConfig.from_dict({**values, "steps": n, "checkpoint_every": n}), out)
            seconds.append(clock() - started)
    return (seconds[1] - seconds[0]) / steps


def bench_setting(name: str, cache: Path, tasks: int, repeats: int, steps: int, device: str) -> dict[str, Any]:
    """Loader tasks/s per worker and, with ``steps``, the training step's samples/s of setting ``name``."""
    config = load_config(SETTINGS[name]["config"])
    cases = prepare_cases(name, config, cache)
    task = demo_model_task(cases, config)
    sampler = task.config.sampler
    batch = int(config["pretrain"]["train"]["batch_size"])
    plain = demo_model_task(cases, _merged(config, {"pretrain": {"mass": {"sampler": {
        "reference_intensity": {"probability": 0}, "query_intensity": {"probability": 0}}}}}))
    loader = loader_rate(task, batch, tasks, repeats)
    row = {
        "setting": name,
        "shapes": sorted({tuple(np.load(c.image, mmap_mode="r").shape) for c in cases}),
        "crop": sampler.crop_size[0],
        "num_masks": sampler.num_masks,
        "min_mask_voxels": sampler.min_mask_voxels,
        "far_query": sampler.far_query,
        "batch": batch,
        "num_workers": int(config["pretrain"]["train"].get("num_workers", 0)),
        "loader_tasks_per_s": loader,
        "loader_tasks_per_s_without_intensity_aug": loader_rate(plain, batch, tasks, repeats),
    }
    if steps:
        step = step_seconds(task, config, steps, device)
        # The model's share: the step less loading its batch in-process.
        row["step_samples_per_s"] = batch / step
        row["model_samples_per_s"] = batch / (step - batch / loader)
        row["workers_to_feed_the_model"] = row["model_samples_per_s"] / loader
    return row


def loader_supply(row: Mapping[str, Any]) -> float:
    """Samples/s the configured workers supply (0 workers: loading in the training process, as one)."""
    return row["loader_tasks_per_s"] * max(row["num_workers"], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="demo,paper", help=f"comma-separated: {', '.join(SETTINGS)}")
    parser.add_argument("--tasks", type=int, default=40, help="tasks per timed round of the loader")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of the loader (the best counts)")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps")
    parser.add_argument("--step-settings", default="demo",
                        help="settings whose training step is timed (a 128^3 step of the demo model needs a GPU: on one CPU "
                             "thread a single sample took over 3 minutes and 9 GB)")
    parser.add_argument("--device", default="cpu", help="device of the training step: cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of the training step")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "mass_bench_loader")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    timed = set(args.step_settings.split(","))
    rows = [bench_setting(name, args.cache, args.tasks, args.repeats, args.steps if name in timed else 0, args.device)
            for name in args.settings.split(",")]
    for r in rows:
        line = (f"{r['setting']:>6}: volumes {r['shapes']}, crop {r['crop']}^3, K={r['num_masks']}, "
                f"min {r['min_mask_voxels']} voxels, far_query {r['far_query']}, batch {r['batch']} | loader "
                f"{r['loader_tasks_per_s']:.1f} tasks/s per worker ({r['loader_tasks_per_s_without_intensity_aug']:.1f} "
                f"without intensity augmentation); {max(r['num_workers'], 1)} (train.num_workers {r['num_workers']}) supply "
                f"{loader_supply(r):.1f} samples/s")
        if "step_samples_per_s" in r:
            bound = "loader" if r["workers_to_feed_the_model"] > 1 else "model"
            line += (f" | training step (demo model, {args.device}, {args.threads} thread(s)): model {r['model_samples_per_s']:.2f} "
                     f"samples/s, {r['step_samples_per_s']:.2f} loading in-process | {r['workers_to_feed_the_model']:.2f} "
                     f"workers keep the model fed: with one worker the {bound} bounds the run")
        else:
            line += " | training step not timed (--step-settings)"
        print(line)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=list) + "\n")


if __name__ == "__main__":
    main()
