"""Compiles, for sm_90, every Triton launch of a DASS-small training step (benchmarks/
triton_static.py: the op's own launch plan, specialised on the real tensors' dtypes and strides)
and checks the launch targets: no spills, at least 4 programs per SM, one output map."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lungsrad.config import DataConfig, expected_num_frames
from lungsrad.models import DASS
from lungsrad.models.selective_scan.triton import forward_launches, plan_launch

REPOSITORY = Path(__file__).resolve().parents[4]
SCRIPT = REPOSITORY / "benchmarks" / "triton_static.py"


def test_launch_table_gives_every_dass_small_launch_four_programs_per_sm():
    # The table alone (no compile): DASS-small's stage maps at batch 16 and 1 on 132 SMs.
    with torch.device("meta"):
        maps = DASS.small().stage_maps(expected_num_frames(DataConfig()), DataConfig().num_mel_bins)
    assert maps == [(96, 32, 200), (192, 16, 100), (384, 8, 50), (768, 4, 25)]
    for batch in (16, 1):
        for channels, height, width in maps:
            length = height * width
            plan = plan_launch(batch, channels, length, directions=4, fused=True, processors=132)
            chunks = -(-length // plan.block_t)
            for block_c in (plan.block_c, plan.backward_block_c):
                programs = chunks * -(-channels // block_c) * batch * 2
                assert programs >= 4 * 132 or (batch == 1 and plan.block_t == 16), (batch, plan)
            assert plan.block_t * plan.block_c <= 1024
            assert plan.block_t * plan.backward_block_c <= 512
            if batch == 16:
                carry_programs = -(-channels // plan.carry_block_c) * batch * 4
                assert carry_programs >= 4 * 132, (channels, plan)


def test_fused_forward_writes_one_output_map():
    u = torch.empty(2, 12, 8, device="meta", dtype=torch.bfloat16)
    delta = torch.empty(4, 2, 12, 8, device="meta", dtype=torch.bfloat16)
    A = torch.empty(32, device="meta")
    gates = torch.empty(2, 4, 12, device="meta", dtype=torch.bfloat16)
    plan = plan_launch(2, 8, 12, directions=4, fused=True, processors=132)
    launches, y, _ = forward_launches(u, delta, A, gates, gates, A, A, True, 3, 4, True, plan)
    assert y.shape == u.shape and y.dtype == torch.float32
    assert [launch.name for launch in launches] == [
        "forward totals",
        "forward carry",
        "forward output",
    ]


@pytest.mark.slow  # about a minute on 2 cores the first time (Triton caches compiled kernels)
@pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") == "1", reason="Triton's interpreter is on in this process"
)
def test_every_dass_small_launch_compiles_for_hopper_without_spills():
    pytest.importorskip("triton", reason="triton does not import")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", "--check", "--models", "small",
         "--batches", "16"],
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    launches = report["launches"]
    # Four stages, each: forward totals, carry, output; backward totals, carry, gradients.
    assert len(launches) == 24
    maps = sorted({(x["stage"], x["height"], x["width"], x["channels"]) for x in launches})
    assert maps == [(0, 32, 200, 96), (1, 16, 100, 192), (2, 8, 50, 384), (3, 4, 25, 768)]
    assert {x["pass"] for x in launches} == {"forward", "backward"}
    for launch in launches:
        assert launch["model"] == "small" and launch["batch"] == 16
        assert launch["spill_bytes"] == 0, launch
        assert 0 < launch["registers"] <= 255, launch
        assert launch["programs_per_sm"] >= 4, launch
    assert report["problems"] == []
    assert sum(x["blocks"] for x in launches) == 6 * 14  # 14 SS2D blocks, 6 launches each
