from __future__ import annotations

import os

import pytest

from mass_core.evaluate.windows import available_cpus


@pytest.mark.parametrize("cpu_max, cap", [("max 100000\n", None), ("100000 100000\n", 1), ("150000 100000\n", 2), ("garbage", None)])
def test_available_cpus_follow_the_affinity_mask_and_a_cgroup_quota(tmp_path, cpu_max, cap):
    mine = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text(cpu_max)
    assert available_cpus(tmp_path / "cpu.max") == (mine if cap is None else min(mine, cap))
    assert available_cpus(tmp_path / "missing") == mine
