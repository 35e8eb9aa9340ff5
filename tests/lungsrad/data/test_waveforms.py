"""Cycle waveforms: slicing at 16 kHz, repeat / zero padding, cutting, one decode per recording."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from lungsrad.config import DataConfig
from lungsrad.data.icbhi import (
    audio_decode_count,
    fit_to_length,
    load_cycle_waveforms,
    load_icbhi_index,
)

TRAIN = "101_1b1_Al_sc_Meditron"


def test_repeat_padding_tiles_the_cycle() -> None:
    padded = fit_to_length(torch.tensor([1.0, 2.0, 3.0]), 8, "repeat")
    assert padded.tolist() == [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0]


def test_zero_padding_appends_zeros() -> None:
    padded = fit_to_length(torch.tensor([1.0, 2.0, 3.0]), 6, "zero")
    assert padded.tolist() == [1.0, 2.0, 3.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("padding", ["repeat", "zero"])
def test_long_cycles_are_cut(padding: str) -> None:
    assert fit_to_length(torch.arange(10.0), 4, padding).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert fit_to_length(torch.arange(4.0), 4, padding).tolist() == [0.0, 1.0, 2.0, 3.0]


def test_bad_padding_and_empty_cycle() -> None:
    with pytest.raises(ValueError, match="data.padding must be 'repeat' or 'zero'"):
        fit_to_length(torch.ones(3), 8, "reflect")
    with pytest.raises(ValueError, match="empty cycle"):
        fit_to_length(torch.ones(0), 8, "repeat")


def _ramp_dataset(tmp_path: Path, make_dataset, make_wav, *, rate: int) -> Path:
    """One 4-s recording whose sample value encodes time (a slow ramp), cycles at known times."""
    annotations = {
        TRAIN: ("train", "1.0\t2.0\t0\t0\n0.5\t3.5\t1\t0\n0.0\t3.99\t0\t1\n"),
        "102_1b1_Ar_sc_Meditron": ("test", "0.0\t1.0\t0\t0\n"),
    }
    root = make_dataset(tmp_path / "data", annotations, seconds=4.0, rate=rate)
    t = np.arange(4 * rate) / rate
    make_wav(root / f"{TRAIN}.wav", rate=rate, samples=(0.2 * t).astype(np.float32))
    return root


@pytest.mark.parametrize("rate", [4000, 10000, 44100])
def test_cycles_are_resampled_sliced_and_padded(
    tmp_path: Path, make_dataset, make_wav, rate: int
) -> None:
    root = _ramp_dataset(tmp_path, make_dataset, make_wav, rate=rate)
    recording = next(r for r in load_icbhi_index(root) if r.name == TRAIN)
    config = DataConfig()
    before = audio_decode_count()
    first, second, third = load_cycle_waveforms(recording, config)
    assert audio_decode_count() == before + 1  # one decode (and one resample) for three cycles
    assert first.shape == second.shape == third.shape == (128000,)
    assert first.dtype == torch.float32
    # Cycle [1.0, 2.0) s = 16000 samples at 16 kHz holding the ramp from 0.2 to 0.4, tiled 8x.
    np.testing.assert_allclose(
        first[100:15900].numpy(), 0.2 * (1 + np.arange(100, 15900) / 16000), atol=2e-3
    )
    torch.testing.assert_close(first[:16000], first[16000:32000])
    torch.testing.assert_close(first[:16000], first[112000:128000])
    # A 3-s cycle repeats after 48000 samples and is cut at 8 s.
    torch.testing.assert_close(second[:32000], second[48000:80000])

    zero = load_cycle_waveforms(recording, dataclasses.replace(config, padding="zero"))
    torch.testing.assert_close(zero[0][:16000], first[:16000])
    assert torch.count_nonzero(zero[0][16000:]) == 0
    assert torch.count_nonzero(zero[2][63840:]) == 0  # 3.99 s = 63840 samples


def test_segment_length_and_rate_come_from_the_config(small_dataset: Path) -> None:
    recording = load_icbhi_index(small_dataset)[0]
    config = DataConfig(sample_rate_hz=8000, segment_seconds=2.5)
    assert [w.shape for w in load_cycle_waveforms(recording, config)] == [(20000,), (20000,)]


def test_cycle_end_slightly_past_the_file_is_clipped(small_dataset: Path) -> None:
    with open(small_dataset / f"{TRAIN}.txt", "a", encoding="utf-8") as stream:
        stream.write("2.5\t3.03\t0\t0\n")  # 3-s file: 30 ms overshoot, within tolerance
    recording = load_icbhi_index(small_dataset)[0]
    last = load_cycle_waveforms(recording, DataConfig(padding="zero"))[-1]
    assert torch.count_nonzero(last[:8000]) > 7000 and torch.count_nonzero(last[8000:]) == 0


def test_cycle_past_the_file_fails_in_load_cycle_waveforms_too(small_dataset: Path) -> None:
    recording = load_icbhi_index(small_dataset)[0]
    late = dataclasses.replace(recording.cycles[0], start_seconds=2.5, end_seconds=3.6, line=7)
    broken = dataclasses.replace(recording, cycles=(late,))
    with pytest.raises(ValueError, match=r"Meditron.txt:7: cycle ends at 3.6 s, 0.600 s past"):
        load_cycle_waveforms(broken, DataConfig())
