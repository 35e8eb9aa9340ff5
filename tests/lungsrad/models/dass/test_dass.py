"""DASS: golden conformance with the reference code, shapes, parameter counts, training."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lungsrad.models import DASS, load_dass_checkpoint
from lungsrad.models.dass import DropPath
from lungsrad.models.selective_scan.mamba_ssm import is_mamba_ssm_installed
from tests.golden import shared_folder

REFERENCE = "dass_reference"  # shared/dass_reference: the reference implementation's outputs
TINY = {"dims": (32, 64, 128, 256), "depths": (1, 1, 2, 1)}
MICRO = {"dims": (8, 16), "depths": (1, 1)}


@pytest.fixture(scope="module")
def golden() -> dict:
    path = shared_folder(REFERENCE, "dass_tiny.pt") / "dass_tiny.pt"
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def golden_model(golden) -> DASS:
    model = DASS(num_classes=4, **TINY)
    load_dass_checkpoint(model, golden["state_dict"])
    return model.eval()


def test_golden_logits_float32(golden, golden_model):
    with torch.no_grad():
        logits = golden_model(golden["input"])
    torch.testing.assert_close(logits, golden["logits"], atol=1e-5, rtol=0)


@pytest.mark.slow  # float64 depthwise convs take PyTorch's slow path: up to ~10 s on 2 cores
def test_golden_logits_float64(golden, golden_model):
    model = DASS(num_classes=4, **TINY).double().eval()
    model.load_state_dict(golden_model.state_dict())
    with torch.no_grad():
        logits = model(golden["input"].double())
    torch.testing.assert_close(logits, golden["logits_float64"], atol=1e-7, rtol=0)


def test_golden_intermediates(golden, golden_model):
    intermediates = shared_folder(REFERENCE, "dass_tiny_intermediates.pt")
    expected = torch.load(intermediates / "dass_tiny_intermediates.pt", weights_only=True)[
        "intermediates"
    ]
    outputs = {}
    handles = [
        golden_model.layers[i].blocks.register_forward_hook(
            lambda _m, _i, out, i=i: outputs.__setitem__(f"layers.{i}.blocks", out)
        )
        for i in range(4)
    ]
    try:
        with torch.no_grad():
            embedded = golden_model.embed(golden["input"])
            pooled = golden_model.forward_from_embedding(embedded)
    finally:
        for handle in handles:
            handle.remove()
    outputs.update(patch_embed=embedded, pooled=pooled)
    for name, value in outputs.items():
        assert list(value.shape) == list(expected[name].shape), name
        torch.testing.assert_close(value, expected[name], atol=1e-4, rtol=1e-4, msg=name)
    stage_shapes = [list(outputs[f"layers.{i}.blocks"].shape) for i in range(4)]
    assert stage_shapes == [list(s) for s in golden["stage_outputs"]]


@pytest.mark.parametrize(("frames", "mel_bins"), [(798, 128), (101, 64), (7, 9)])
def test_any_frame_count(frames, mel_bins):
    model = DASS(num_classes=3, **MICRO).eval()
    x = torch.randn(2, frames, mel_bins)
    with torch.no_grad():
        embedded = model.embed(x)
        pooled = model.forward_from_embedding(embedded)
        logits = model(x)
    height, width = math.ceil(math.ceil(mel_bins / 2) / 2), math.ceil(math.ceil(frames / 2) / 2)
    assert embedded.shape == (2, 8, height, width)
    assert pooled.shape == (2, model.num_features) == (2, 16)
    torch.testing.assert_close(model.forward_head(pooled), logits)
    torch.testing.assert_close(model.forward_features(x), pooled)


def test_block_access_and_hooks():
    model = DASS(num_classes=4, dims=(8, 16, 32), depths=(1, 2, 1)).eval()
    seen = {}
    block = model.block(1, 1)
    handle = block.register_forward_hook(lambda _m, _i, out: seen.update(shape=out.shape))
    with torch.no_grad():
        model(torch.randn(1, 40, 32))
    handle.remove()
    assert seen["shape"] == (1, 16, 4, 5)
    assert model.depths == (1, 2, 1)
    with pytest.raises(ValueError, match="no block"):
        model.block(1, 2)
    with pytest.raises(ValueError, match="no block"):
        model.block(3, 0)


def test_forward_hook_can_replace_a_block_output():
    model = DASS(num_classes=4, **MICRO).eval()
    x = torch.randn(1, 20, 16)
    handle = model.block(0, 0).register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
    with torch.no_grad():
        hooked = model.forward_features(x)
        handle.remove()
        plain = model.forward_features(x)
    assert not torch.allclose(hooked, plain)


def test_backends_agree_inside_the_model():
    model = DASS(num_classes=4, **MICRO).double().eval()
    x = torch.randn(2, 24, 16, dtype=torch.float64)
    outputs = {}
    for backend in ("reference", "chunked"):
        model.scan_backend = backend
        outputs[backend] = model(x)
    torch.testing.assert_close(outputs["chunked"], outputs["reference"], rtol=1e-10, atol=1e-12)


def test_constructor_validation():
    with pytest.raises(ValueError, match="same length"):
        DASS(dims=(8, 16), depths=(1,))
    with pytest.raises(ValueError, match="even"):
        DASS(dims=(7,), depths=(1,))
    with pytest.raises(ValueError, match="unknown selective scan backend"):
        DASS(scan_backend="cuda", **MICRO)
    with pytest.raises(ValueError, match=r"\(batch, frames, mel_bins\)"):
        DASS(**MICRO)(torch.randn(20, 16))
    if not is_mamba_ssm_installed():
        with pytest.raises(ImportError, match="MAMBA_FORCE_BUILD=TRUE"):
            DASS(scan_backend="mamba_ssm", **MICRO)


def test_initialisation_follows_the_reference():
    model = DASS(num_classes=4, dims=(64, 128), depths=(2, 1), drop_path_rate=0.1)
    op = model.block(0, 0).op
    assert torch.equal(op.A_logs, torch.zeros_like(op.A_logs))
    assert torch.equal(op.Ds, torch.ones_like(op.Ds))
    dt = torch.nn.functional.softplus(op.dt_projs_bias)
    assert dt.min() >= 1e-4 * 0.999 and dt.max() <= 0.1 * 1.001
    assert 0.01 < model.block(0, 1).mlp.fc1.weight.std() < 0.03
    assert torch.equal(model.block(0, 1).mlp.fc1.bias, torch.zeros(256))
    rates = [block.drop_path.rate for layer in model.layers for block in layer.blocks]
    assert rates == pytest.approx([0.0, 0.05, 0.1])


def test_drop_path_is_per_sample_and_off_in_eval():
    torch.manual_seed(0)
    drop = DropPath(0.5)
    x = torch.ones(64, 3, 2, 2)
    out = drop.train()(x)
    per_sample = out.flatten(1)
    assert set(per_sample[:, 0].tolist()) == {0.0, 2.0}
    assert torch.all(per_sample == per_sample[:, :1])
    assert torch.equal(drop.eval()(x), x)


def test_presets_and_properties():
    model = DASS(num_classes=3, **MICRO)
    assert model.num_features == 16 and model.dims == (8, 16) and model.num_classes == 3
    with torch.device("meta"):
        small = DASS.small(num_classes=4)
    assert small.depths == (2, 2, 8, 2) and small.num_features == 768
    assert [b.drop_path.rate for b in small.layers[3].blocks][-1] == pytest.approx(0.2)


@pytest.mark.parametrize(("preset", "count"), [("small", 29_884_463), ("medium", 48_648_239)])
def test_release_parameter_counts(preset, count):
    with torch.device("meta"):
        model = getattr(DASS, preset)(num_classes=527)
    assert sum(p.numel() for p in model.parameters()) == count


@pytest.mark.parametrize("preset", ["small", "medium"])
def test_release_checkpoint_keys(preset):
    manifest = f"dass_{preset}_keys.json"
    path = shared_folder(REFERENCE, manifest) / manifest
    with torch.device("meta"):
        model = getattr(DASS, preset)(num_classes=527)
    keys = {f"module.v.{k}": list(v.shape) for k, v in model.state_dict().items()}
    assert list(keys.items()) == list(json.loads(path.read_text()).items())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stage_maps_of_an_icbhi_segment(dtype):
    # 798 frames: ceil(798 / 2) = 399, ceil(399 / 2) = 200 after the patch embedding's convs.
    with torch.device("meta"):
        small = DASS.small()
    assert small.stage_maps(798, 128) == [(96, 32, 200), (192, 16, 100), (384, 8, 50), (768, 4, 25)]
    model = DASS(num_classes=4, **MICRO).to(dtype)  # real weights: the maps a forward sees
    seen = []
    model.block(1, 0).register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape[1:])))
    with torch.no_grad():
        model(torch.randn(1, 37, 21, dtype=dtype))
    assert model.stage_maps(37, 21) == [(8, 6, 10), seen[0]] == [(8, 6, 10), (16, 3, 5)]


def test_label_dim_4_parameter_count():
    with torch.device("meta"):
        model = DASS.small(num_classes=4)
    assert sum(p.numel() for p in model.parameters()) == 29_482_276


def test_tiny_model_trains_on_cpu():
    torch.manual_seed(0)
    model = DASS(num_classes=4, dims=(16, 32), depths=(1, 1), drop_path_rate=0.1)
    x = torch.randn(4, 48, 32)
    labels = torch.tensor([0, 1, 2, 3])
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] * 0.7
    assert all(p.grad is not None for p in model.parameters())


def test_cpu_autocast_runs_scan_in_float32():
    model = DASS(num_classes=4, **MICRO).eval()
    x = torch.randn(2, 24, 16)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(x)
    assert torch.isfinite(mixed).all()
    torch.testing.assert_close(mixed.float(), reference, atol=5e-2, rtol=5e-2)


# ---------------------------------------------------------------------------------------------
# GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_golden_logits_on_cuda_float32(golden, monkeypatch):
    # Plain float32 on the GPU (no TF32) must meet nearly the CPU bar.
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    for backend in ["chunked", *(["mamba_ssm"] if is_mamba_ssm_installed() else [])]:
        model = DASS(num_classes=4, scan_backend=backend, **TINY)
        load_dass_checkpoint(model, golden["state_dict"])
        model = model.cuda().eval()
        with torch.no_grad():
            logits = model(golden["input"].cuda())
        torch.testing.assert_close(logits.cpu(), golden["logits"], atol=1e-4, rtol=0, msg=backend)


@pytest.mark.gpu
@pytest.mark.skipif(
    not (torch.cuda.is_available() and is_mamba_ssm_installed()),
    reason="needs a CUDA device and mamba-ssm",
)
def test_mamba_ssm_model_under_bf16_autocast_trains():
    torch.manual_seed(0)
    model = DASS(num_classes=4, dims=(32, 64), depths=(1, 1), scan_backend="mamba_ssm").cuda()
    x = torch.randn(4, 96, 64, device="cuda")
    labels = torch.tensor([0, 1, 2, 3], device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        model.eval()
        fused = model(x).float()
        model.scan_backend = "chunked"
        plain = model(x).float()
    torch.testing.assert_close(fused, plain, atol=5e-2, rtol=5e-2)
