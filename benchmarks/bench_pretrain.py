"""Throughput of pretraining: data loader alone, on-device affine, training steps.

Tells whether loading or compute bounds training. Prints one line per
measurement; ``--json`` also writes them to a file.

    python benchmarks/bench_pretrain.py                   # CPU, tiny + paper-sized model
    python benchmarks/bench_pretrain.py --device cuda     # GPU, bf16, paper crops
    python benchmarks/bench_pretrain.py --methods         # MASS, MIM, MiM steps at the demo's settings
    python benchmarks/bench_pretrain.py --methods --baseline /path/to/old/checkout

``--methods`` times whole trainer steps (sampling, warp, forward, backward,
clipping, LAMB, schedule, EMA) of each method at ``config/config.yaml``'s
settings on one thread, as the demo runs them. With ``--baseline`` it times
the same steps with the ``mass_core`` of another checkout, alternating
old and new runs in fresh processes (the machine may be shared), and prints
old and new samples/s with their ratio beside the 3x target. Figures are
samples per second of wall-clock time and of process CPU time; the second
is steadier when other jobs share the cores. Each method's steps are also
profiled once more to sum the time spent inside convolution kernels:
``conv_bound_samples_per_s`` is the rate with everything else free, so
``conv_bound_speedup`` (over the baseline) is the most any change that keeps
the model's convolutions and oneDNN's float32 kernels for them can give.

On CPU the paper-sized model runs on a reduced crop and batch (printed), as
128^3 x 4 tasks x 13 masks does not fit a CPU budget.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import default_collate

from mass_core.models.encoder import EncoderConfig
from mass_core.models.incontext import InContextConfig
from mass_core.pretrain.augment import SpatialAugConfig, random_affine, warp_query
from mass_core.pretrain.mass import MassConfig, MassTask, StoreCase
from mass_core.pretrain.optim import build_optimizer
from mass_core.pretrain.ema import build_ema
from mass_core.pretrain.run import training_cases
from mass_core.pretrain.sampler import SamplerConfig
from mass_core.pretrain.synthetic import write_synthetic_dataset

# Demo settings (config/config.yaml): encoder, batch, crops, K, prototypes; threads 1.
DEMO_CHANNELS = (8, 16, 32, 64)
DEMO_BATCH = 2
DEMO_CROP = 32
TARGET_SPEEDUP = 3.0
METHODS = ("mass", "mim", "mim_hier")


@dataclass(frozen=True)
class Setting:
    """A model size with the crop, batch and K it is benchmarked at."""

    name: str
    channels: tuple[int, ...]
    blocks: int
    heads: int
    crop: int
    batch: int
    masks: int


TINY = Setting("tiny (default)", (8, 16, 32, 64), 1, 4, 32, 2, 5)
PAPER = Setting("paper", (32, 64, 128, 256, 512), 2, 8, 128, 4, 13)
PAPER_ON_CPU = Setting("paper, reduced for CPU", PAPER.channels, 2, 8, 64, 1, 3)


def _timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    """Mean seconds per call after one warm-up call."""
    fn()
    sync()
    began = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - began) / repeats


def _task(setting: Setting, cases: list[StoreCase]) -> MassTask:
    model = InContextConfig(EncoderConfig(setting.channels, setting.blocks), heads=setting.heads)
    return MassTask(cases, MassConfig(model, SamplerConfig(crop_size=setting.crop, num_masks=setting.masks)))


def bench_loader(cases: list[StoreCase], setting: Setting, repeats: int) -> dict:
    task = _task(setting, cases)
    counter = iter(range(10**9))
    seconds = _timed(lambda: task.sample(0, 0, next(counter)), repeats, lambda: None)
    return {"what": "loader", "setting": f"crop {setting.crop}^3, K={setting.masks}", "samples_per_s": 1 / seconds, "ms_per_sample": 1000 * seconds}


def bench_affine(device: torch.device, setting: Setting, repeats: int, sync: Callable[[], None]) -> list[dict]:
    size = (setting.crop,) * 3
    rng = np.random.default_rng(0)
    image = torch.randn(setting.batch, 1, *size, device=device)
    masks = (torch.rand(setting.batch, setting.masks, *size, device=device) > 0.5).to(torch.uint8)
    theta = torch.from_numpy(np.stack([random_affine(rng, SpatialAugConfig(), size) for _ in range(setting.batch)])).to(device)
    seconds = _timed(lambda: warp_query(image, masks, theta), repeats, sync)
    rows = [{"what": "affine on device", "setting": f"{device.type}, batch {setting.batch} x (1 + {setting.masks}) x {setting.crop}^3", "ms_per_batch": 1000 * seconds, "ms_per_sample": 1000 * seconds / setting.batch}]
    if device.type == "cpu":
        from monai.transforms import RandAffined

        keys = ["image", "masks"]
        transform = RandAffined(keys, prob=1.0, rotate_range=[np.pi / 6] * 3, scale_range=[0.3] * 3, mode=("bilinear", "nearest"), padding_mode="zeros")
        sample = {"image": image[0].cpu(), "masks": masks[0].cpu().float()}
        seconds = _timed(lambda: transform(sample), max(repeats // 2, 1), lambda: None)
        rows.append({"what": "MONAI RandAffined (reference)", "setting": f"one sample, 1 + {setting.masks} x {setting.crop}^3", "ms_per_sample": 1000 * seconds})
    return rows


def bench_training(cases: list[StoreCase], setting: Setting, device: torch.device, repeats: int, sync: Callable[[], None]) -> dict:
    task = _task(setting, cases)
    torch.manual_seed(0)
    model = task.build_model().to(device)
    optimizer = build_optimizer(model, "lamb", 2e-3, 0.01)
    ema = build_ema(model, 0.99)
    batch = task.make_batch(default_collate([task.sample(0, 0, i) for i in range(setting.batch)]), device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = task.compute_loss(model, batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        ema.update_parameters(model)

    seconds = _timed(step, repeats, sync)
    params = sum(p.numel() for p in model.parameters())
    encoder = sum(p.numel() for p in model.encoder.parameters())
    return {
        "what": "training step",
        "setting": f"{setting.name}: {params / 1e6:.2f}M params ({encoder / 1e6:.2f}M encoder), batch {setting.batch} x K={setting.masks}, {setting.crop}^3, {device.type}",
        "steps_per_s": 1 / seconds,
        "samples_per_s": setting.batch / seconds,
    }


def _method_task(method: str, cases: list) -> object:
    """The demo's task for ``method``, built from the classes both old and new checkouts have."""
    from mass_core.models.reconstruction import ReconstructionConfig
    from mass_core.pretrain.mim import ImageCase, MimConfig, MimTask
    from mass_core.pretrain.mim_hier import MimHierConfig, MimHierTask

    encoder = EncoderConfig(DEMO_CHANNELS, 1)
    if method == "mass":
        sampler = SamplerConfig(crop_size=DEMO_CROP, num_masks=5, min_mask_voxels=300, far_query=0.5)
        return MassTask([StoreCase(c.case_id, c.image, c.proposals) for c in cases], MassConfig(InContextConfig(encoder, prototypes=True), sampler))
    images = [ImageCase(c.case_id, Path(c.image)) for c in cases]
    mim = MimConfig(ReconstructionConfig(encoder), (DEMO_CROP,) * 3)
    return MimTask(images, mim) if method == "mim" else MimHierTask(images, MimHierConfig(mim))


def bench_method(method: str, cases: list, steps: int) -> dict:
    """Samples/s of whole trainer steps of ``method`` at the demo's settings (after two warm-up steps)."""
    from mass_core.pretrain.optim import build_scheduler

    task = _method_task(method, cases)
    torch.manual_seed(0)
    model = task.build_model()
    optimizer = build_optimizer(model, "lamb", 0.01, 0.01)
    scheduler = build_scheduler(optimizer, 0.01, max(2 * steps + 2, 4), 0.05)
    ema = build_ema(model, 0.99)

    def step(index: int) -> None:
        batch = task.make_batch(default_collate([task.sample(0, index, i) for i in range(DEMO_BATCH)]), torch.device("cpu"))
        losses = task.compute_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        ema.update_parameters(model)
        {k: float(v.detach()) for k, v in losses.items()} | {"grad_norm": float(grad_norm)}

    for index in range(2):
        step(index)
    wall, cpu = time.perf_counter(), time.process_time()
    for index in range(2, steps + 2):
        step(index)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        for index in range(steps + 2, 2 * steps + 2):
            step(index)
    conv = sum(event.self_cpu_time_total for event in profile.key_averages() if _is_conv_kernel(event.key)) / 1e6
    return {"what": "method step", "setting": method, "samples_per_s": DEMO_BATCH * steps / wall, "cpu_samples_per_s": DEMO_BATCH * steps / cpu,
            "conv_s_per_step": conv / steps, "conv_bound_samples_per_s": DEMO_BATCH * steps / conv}


# Dispatch layers above the kernels: their self time is bookkeeping, not arithmetic.
_CONV_WRAPPERS = {"aten::conv3d", "aten::conv_transpose3d", "aten::convolution", "aten::_convolution"}


def _is_conv_kernel(name: str) -> bool:
    """Whether a profiler op is a convolution kernel (forward or backward), not a dispatch layer."""
    return name.startswith("aten::") and "conv" in name and name not in _CONV_WRAPPERS


def compare_methods(baseline: Path, rounds: int, steps: int) -> list[dict]:
    """Alternate fresh processes on ``baseline``'s and this checkout's ``mass_core``; median samples/s of each."""
    here = Path(__file__).resolve().parents[1]
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for _ in range(rounds):
        for label, root in (("old", baseline), ("new", here)):
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                env = os.environ | {"PYTHONPATH": str(root)}
                subprocess.run([sys.executable, __file__, "--methods", "--steps", str(steps), "--json", out.name], env=env, check=True, stdout=subprocess.DEVNULL)
                runs[label].append({row["setting"]: row for row in json.loads(Path(out.name).read_text())})
    rows = []
    for method in METHODS:
        row = {"what": "old vs new", "setting": method}
        for key in ("samples_per_s", "cpu_samples_per_s"):
            old = statistics.median(run[method][key] for run in runs["old"])
            new = statistics.median(run[method][key] for run in runs["new"])
            row |= {f"old_{key}": old, f"new_{key}": new, f"speedup_{key.removesuffix('_samples_per_s').removesuffix('samples_per_s') or 'wall'}": new / old}
        bound = statistics.median(run[method]["conv_bound_samples_per_s"] for run in runs["new"])
        row |= {"conv_bound_samples_per_s": bound, "conv_bound_speedup": bound / row["old_samples_per_s"], "target_speedup": TARGET_SPEEDUP}
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--models", default="tiny,paper", help="comma-separated: tiny, paper")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--methods", action="store_true", help="time MASS, MIM and MiM trainer steps at the demo's settings instead")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per method (--methods)")
    parser.add_argument("--baseline", type=Path, help="with --methods: a checkout whose mass_core to compare against")
    parser.add_argument("--rounds", type=int, default=3, help="alternating old/new runs (--baseline)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.methods:
        _main_methods(args)
        return
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    paper = PAPER if device.type == "cuda" else PAPER_ON_CPU
    settings = {"tiny": TINY, "paper": paper}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        # 160^3 cases written like the pipeline's: image.npy (mmap) + proposal store.
        dataset = write_synthetic_dataset(tmp, n_cases=3, shape=(160, 160, 160), n_val=1)
        cases = [StoreCase(r.case_id, r.image, r.proposals) for r in training_cases(dataset.manifest, dataset.proposals_root).itertuples()]
        for setting in (TINY, Setting("issue reference", TINY.channels, 1, 4, 96, 2, 4), PAPER):
            results.append(bench_loader(cases, setting, args.repeats * 4))
        for setting in (TINY, Setting("", (), 1, 1, 96, 2, 4), PAPER):
            results += bench_affine(device, setting, args.repeats, sync)
        for name in args.models.split(","):
            results.append(bench_training(cases, settings[name], device, args.repeats, sync))
    _report(results, args.json)


def _main_methods(args: argparse.Namespace) -> None:
    if args.baseline:
        _report(compare_methods(args.baseline, args.rounds, args.steps), args.json)
        return
    with tempfile.TemporaryDirectory() as tmp:
        dataset = write_synthetic_dataset(tmp, n_cases=3, shape=(96, 96, 96), n_val=1)
        cases = list(training_cases(dataset.manifest, dataset.proposals_root).itertuples())
        _report([bench_method(method, cases, args.steps) for method in METHODS], args.json)


def _report(results: list[dict], path: Path | None) -> None:
    for row in results:
        numbers = ", ".join(f"{k} {v:.2f}" for k, v in row.items() if isinstance(v, float))
        print(f"{row['what']:<30} {row['setting']:<95} {numbers}")
    if path:
        path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
