"""Gaussian kernel, separable smoothing and the block hooks of the spectral regularization."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lungsrad.method.spectral_regularization import (
    GaussianSmoothing2d,
    attach_spectral_regularization,
    gaussian_kernel1d,
)


@pytest.mark.parametrize(("kernel_size", "sigma"), [(1, 1.0), (3, 1.0), (5, 0.7), (9, 2.5)])
def test_kernel_sums_to_one_is_symmetric_and_matches_formula(kernel_size, sigma):
    kernel = gaussian_kernel1d(kernel_size, sigma)
    assert kernel.shape == (kernel_size,) and kernel.dtype == torch.float32
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(kernel, kernel.flip(0), rtol=0, atol=0)
    centre = (kernel_size - 1) / 2
    raw = [math.exp(-((j - centre) ** 2) / (2 * sigma**2)) for j in range(kernel_size)]
    expected = torch.tensor([value / sum(raw) for value in raw])
    torch.testing.assert_close(kernel, expected, rtol=0, atol=1e-7)
    assert int(kernel.argmax()) == kernel_size // 2


@pytest.mark.parametrize(
    ("kernel_size", "sigma", "message"),
    [
        (4, 1.0, "odd"),
        (0, 1.0, "odd"),
        (-3, 1.0, "odd"),
        (3.0, 1.0, "odd"),
        (3, 0.0, "sigma"),
        (3, -1.0, "sigma"),
        (3, float("nan"), "sigma"),
    ],
)
def test_invalid_kernel_settings_raise(kernel_size, sigma, message):
    with pytest.raises(ValueError, match=message):
        gaussian_kernel1d(kernel_size, sigma)
    with pytest.raises(ValueError, match=message):
        GaussianSmoothing2d(kernel_size, sigma)


def test_separable_smoothing_equals_2d_outer_product_kernel():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 11)
    smoothing = GaussianSmoothing2d(5, 1.2)
    kernel = gaussian_kernel1d(5, 1.2)
    kernel2d = torch.outer(kernel, kernel).expand(3, 1, 5, 5)
    expected = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel2d, groups=3)
    out = smoothing(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_each_channel_is_smoothed_on_its_own():
    x = torch.zeros(1, 3, 7, 7)
    x[0, 1, 3, 3] = 1.0
    out = GaussianSmoothing2d(3, 1.0)(x)
    assert out[0, 0].abs().max() == 0 and out[0, 2].abs().max() == 0
    kernel = gaussian_kernel1d(3, 1.0)
    torch.testing.assert_close(out[0, 1, 2:5, 2:5], torch.outer(kernel, kernel))


def _high_frequency_energy(x: torch.Tensor) -> float:
    spectrum = torch.fft.fft2(x).abs() ** 2
    freq_h = torch.fft.fftfreq(x.shape[-2]).abs().view(-1, 1)
    freq_w = torch.fft.fftfreq(x.shape[-1]).abs().view(1, -1)
    high = (freq_h > 0.25) | (freq_w > 0.25)
    return float(spectrum[..., high].sum())


def test_smoothing_lowers_high_frequency_energy():
    torch.manual_seed(1)
    x = torch.randn(1, 4, 32, 48)
    out = GaussianSmoothing2d(5, 1.0)(x)
    before, after = _high_frequency_energy(x), _high_frequency_energy(out)
    assert after < 0.2 * before
    # The mean (DC) of each channel stays put, up to the edge handling.
    torch.testing.assert_close(out.mean(dim=(2, 3)), x.mean(dim=(2, 3)), rtol=0, atol=0.05)


@pytest.mark.parametrize("shape", [(2, 3, 8, 10), (1, 2, 1, 7), (1, 2, 2, 1), (1, 1, 1, 1)])
def test_constant_maps_pass_unchanged_even_smaller_than_the_kernel(shape):
    x = torch.full(shape, 2.5)
    out = GaussianSmoothing2d(7, 2.0)(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


def test_length_one_axis_only_smooths_the_other_axis():
    torch.manual_seed(2)
    x = torch.randn(1, 2, 1, 12)
    out = GaussianSmoothing2d(3, 1.0)(x)
    kernel = gaussian_kernel1d(3, 1.0).view(1, 1, 1, 3).expand(2, 1, 1, 3)
    expected = F.conv2d(F.pad(x, (1, 1, 0, 0), mode="reflect"), kernel, groups=2)
    torch.testing.assert_close(out, expected)


def test_kernel_is_a_fixed_non_persistent_buffer_and_dtype_follows_input():
    smoothing = GaussianSmoothing2d(3, 1.0)
    assert list(smoothing.parameters()) == []
    assert smoothing.state_dict() == {}
    out = smoothing(torch.randn(1, 2, 5, 5, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        smoothing(torch.randn(2, 5, 5))


def test_kernel_size_one_is_identity():
    x = torch.randn(1, 2, 4, 4)
    assert torch.equal(GaussianSmoothing2d(1, 1.0)(x), x)


# ---------------------------------------------------------------------------------------------
# Hooks


def _block_outputs(model, x):
    outputs, handles = {}, []
    for stage, depth in enumerate(model.depths):
        for index in range(depth):

            def keep(module, args, output, key=(stage, index)):
                outputs[key] = (args[0].detach().clone(), output.detach().clone())

            handles.append(model.block(stage, index).register_forward_hook(keep))
    logits = model(x)
    for handle in handles:
        handle.remove()
    return logits.detach(), outputs


def test_hooks_smooth_only_the_chosen_blocks_and_removal_restores(standin_model, make_config):
    model = standin_model.eval()
    config = make_config(
        regularization={"enabled": True, "stage": 1, "blocks": [1], "kernel_size": 3, "sigma": 1.0}
    )
    x = torch.randn(2, 40, 32)
    state_before = {key: value.clone() for key, value in model.state_dict().items()}
    plain_logits, plain = _block_outputs(model, x)

    handles = attach_spectral_regularization(model, config)
    assert len(handles) == 1
    smoothed_logits, smoothed = _block_outputs(model, x)
    assert not torch.allclose(smoothed_logits, plain_logits)
    smoothing = GaussianSmoothing2d(3, 1.0)
    for key, (block_input, block_output) in smoothed.items():
        raw = model.block(*key).forward(block_input)  # .forward bypasses the hooks
        if key == (1, 1):
            torch.testing.assert_close(block_output, smoothing(raw))
            assert not torch.allclose(block_output, raw)
        else:
            torch.testing.assert_close(block_output, raw)
        if key < (1, 1):
            torch.testing.assert_close(block_output, plain[key][1])
    assert model.state_dict().keys() == state_before.keys()

    for handle in handles:
        handle.remove()
    restored_logits, _ = _block_outputs(model, x)
    torch.testing.assert_close(restored_logits, plain_logits, rtol=0, atol=0)
    assert all(not model.block(1, i)._forward_hooks for i in range(3))


def test_hooks_apply_in_training_mode_too(standin_model, make_config):
    config = make_config(regularization={"enabled": True, "stage": 0, "blocks": "all"})
    model = standin_model.train()
    x = torch.randn(2, 40, 32)
    plain = model(x)
    handles = attach_spectral_regularization(model, config)
    assert len(handles) == 2
    assert not torch.allclose(model(x), plain)
    plain.sum().backward()  # graph through the hooked blocks is intact
    model(x).sum().backward()
    assert model.block(0, 0).conv.weight.grad is not None


def test_disabled_regularization_attaches_nothing(standin_model, make_config):
    assert attach_spectral_regularization(standin_model, make_config()) == []


def test_placement_the_model_does_not_have_is_rejected(standin_model, make_config):
    config = make_config(depths=(2, 5), regularization={"enabled": True, "stage": 1, "blocks": [4]})
    with pytest.raises(ValueError, match="blocks"):
        attach_spectral_regularization(standin_model, config)
    config = make_config(
        dims=(8, 16, 32),
        depths=(2, 3, 1),
        regularization={"enabled": True, "stage": 2, "blocks": [0]},
    )
    with pytest.raises(ValueError, match="stage"):
        attach_spectral_regularization(standin_model, config)


def test_attaching_twice_is_refused(standin_model, make_config):
    config = make_config(regularization={"enabled": True, "stage": 1, "blocks": [0, 2]})
    attach_spectral_regularization(standin_model, config)
    with pytest.raises(RuntimeError, match="already attached"):
        attach_spectral_regularization(standin_model, config)


def test_real_dass_block_hook(tiny_dass, make_config):
    model = tiny_dass().eval()
    config = make_config(
        dims=(16, 32, 64, 128),
        depths=(1, 1, 2, 1),
        regularization={"enabled": True, "stage": 2, "blocks": [1], "kernel_size": 3},
    )
    x = torch.randn(1, 64, 32)
    with torch.no_grad():
        plain = model(x)
        handles = attach_spectral_regularization(model, config)
        smoothed = model(x)
        for handle in handles:
            handle.remove()
        restored = model(x)
    assert not torch.allclose(plain, smoothed)
    torch.testing.assert_close(restored, plain, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(2, 3, 7, 11), (1, 4, 2, 25), (1, 2, 1, 1)])
def test_zero_padding_equals_the_authors_blur_as_one_conv2d(shape):
    # blur_separable (ICBHI_HADES vmamba_hades.py at 51a4c42): zeros outside the map, padding
    # k // 2; written here as one depthwise conv2d with the outer-product kernel.
    torch.manual_seed(0)
    x = torch.randn(*shape)
    channels = shape[1]
    smoothing = GaussianSmoothing2d(5, 3.0, padding="zero")
    g = gaussian_kernel1d(5, 3.0)
    kernel = torch.outer(g, g).expand(channels, 1, 5, 5)
    expected = F.conv2d(x, kernel, padding=2, groups=channels)
    torch.testing.assert_close(smoothing(x), expected, rtol=1e-5, atol=1e-6)
    # Reflect padding keeps the mass a zero border loses.
    if shape[2] > 2:
        reflect = GaussianSmoothing2d(5, 3.0)(x)
        assert not torch.allclose(reflect[:, :, 0], expected[:, :, 0], atol=1e-4)
    with pytest.raises(ValueError, match="padding"):
        GaussianSmoothing2d(5, 3.0, padding="circular")
