"""Cycle waveforms: wav decoding (PCM and float; stereo, NaN and garbage refused), slicing at
16 kHz, repeat / zero padding, cutting, one decode per recording; the reference's fades,
truncated cuts and centred zero padding; version 1's meaning unchanged."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from lungsrad.config import LEGACY_DEFAULTS, DataConfig
from lungsrad.data.icbhi import load_icbhi_index
from lungsrad.data.waveform import (
    audio_decode_count,
    fade_length,
    fit_to_length,
    load_cycle_waveforms,
    read_audio_info,
    read_wav,
    sample_index,
)

TRAIN = "101_1b1_Al_sc_Meditron"
# What a version-1 config means for the data keys version 1 did not have.
VERSION_1 = {
    path.split(".", 1)[1]: value
    for path, value in LEGACY_DEFAULTS[1].items()
    if path.startswith("data.")
}


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
    config = DataConfig(**VERSION_1)  # no fades: the tiles repeat exactly
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
    last = load_cycle_waveforms(recording, DataConfig(padding="zero", zero_padding="end"))[-1]
    assert torch.count_nonzero(last[:8000]) > 7000 and torch.count_nonzero(last[8000:]) == 0


def test_cycle_past_the_file_fails_in_load_cycle_waveforms_too(small_dataset: Path) -> None:
    recording = load_icbhi_index(small_dataset)[0]
    late = dataclasses.replace(recording.cycles[0], start_seconds=2.5, end_seconds=3.6, line=7)
    broken = dataclasses.replace(recording, cycles=(late,))
    with pytest.raises(ValueError, match=r"Meditron.txt:7: cycle ends at 3.6 s, 0.600 s past"):
        load_cycle_waveforms(broken, DataConfig())


def test_centred_zero_padding_puts_the_cycle_in_the_middle() -> None:
    padded = fit_to_length(torch.tensor([1.0, 2.0, 3.0]), 8, "zero", zero_padding="centre")
    assert padded.tolist() == [0.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0]  # offset (8 - 3) // 2
    with pytest.raises(ValueError, match="data.zero_padding must be 'centre' or 'end'"):
        fit_to_length(torch.ones(3), 8, "zero", zero_padding="middle")


def test_repeat_padding_fades_out_every_cycle_of_target_length_or_less() -> None:
    # The reference pads (and fades) a cycle of exactly the target length too; a longer one is
    # only cut. torchaudio's linear fade-out of 2 samples multiplies by [1, 0].
    equal = fit_to_length(torch.tensor([1.0, 2.0, 3.0, 4.0]), 4, "repeat", fade_out_samples=2)
    assert equal.tolist() == [1.0, 2.0, 3.0, 0.0]
    short = fit_to_length(torch.tensor([1.0, 2.0, 3.0]), 5, "repeat", fade_out_samples=2)
    assert short.tolist() == [1.0, 2.0, 3.0, 1.0, 0.0]
    longer = fit_to_length(torch.arange(1.0, 7.0), 4, "repeat", fade_out_samples=2)
    assert longer.tolist() == [1.0, 2.0, 3.0, 4.0]
    zero = fit_to_length(torch.tensor([1.0, 2.0, 3.0, 4.0]), 4, "zero", fade_out_samples=2)
    assert zero.tolist() == [1.0, 2.0, 3.0, 4.0]  # zero padding is never faded


def test_truncated_and_rounded_cuts() -> None:
    # 1.001 s * 16 kHz is 16015.999999999998 in floating point.
    assert sample_index(1.001, 16000, "truncated") == 16015
    assert sample_index(1.001, 16000, "rounded") == 16016
    assert sample_index(0.3, 16000, "truncated") == sample_index(0.3, 16000, "rounded") == 4800
    with pytest.raises(ValueError, match="data.cycle_slicing"):
        sample_index(1.0, 16000, "nearest")
    assert fade_length(16000) == 1000 and fade_length(44100) == 2756


@pytest.mark.parametrize("rate", [4000, 44100])
def test_reference_fades_the_recording_and_each_padded_cycle(
    tmp_path: Path, make_dataset, make_wav, rate: int
) -> None:
    root = _ramp_dataset(tmp_path, make_dataset, make_wav, rate=rate)
    recording = next(r for r in load_icbhi_index(root) if r.name == TRAIN)
    plain = load_cycle_waveforms(recording, dataclasses.replace(DataConfig(), fade="none"))
    faded = load_cycle_waveforms(recording, DataConfig())  # the defaults: fade reference
    ramp_in = torch.linspace(0, 1, 1000)
    ramp_out = torch.linspace(1, 0, 1000)
    # Cycle 1.0-2.0 s: untouched by the recording fades; its padded copy fades out at the end.
    torch.testing.assert_close(faded[0][:127000], plain[0][:127000], rtol=0, atol=0)
    torch.testing.assert_close(faded[0][127000:], plain[0][127000:] * ramp_out)
    # Cycle 0.0-3.99 s starts at the recording's first sample: faded in there.
    torch.testing.assert_close(faded[2][:1000], plain[2][:1000] * ramp_in)
    torch.testing.assert_close(faded[2][1000:60000], plain[2][1000:60000], rtol=0, atol=0)


def _version_1_cycles(recording, data_config: DataConfig) -> list[torch.Tensor]:
    """lungsrad 1's cycle pipeline, written out (main at 638a57c): torchaudio.functional.resample,
    floor(t * rate + 1e-6) cuts, cut when at least the target length, else tile or append zeros."""
    samples, source_rate = read_wav(recording.wav_path)
    rate = data_config.sample_rate_hz
    waveform = torch.from_numpy(samples)
    if source_rate != rate:
        waveform = torchaudio.functional.resample(waveform, source_rate, rate)
    target = int(round(data_config.segment_seconds * rate))
    cycles = []
    for cycle in recording.cycles:
        start = int(math.floor(cycle.start_seconds * rate + 1e-6))
        end = min(int(math.floor(cycle.end_seconds * rate + 1e-6)), waveform.shape[-1])
        piece = waveform[start:end]
        if piece.shape[-1] >= target:
            cycles.append(piece[:target])
        elif data_config.padding == "repeat":
            cycles.append(piece.repeat(math.ceil(target / piece.shape[-1]))[:target])
        else:
            cycles.append(torch.nn.functional.pad(piece, (0, target - piece.shape[-1])))
    return cycles


@pytest.mark.parametrize("padding", ["repeat", "zero"])
def test_version_1_settings_give_bit_identical_cycles(synthetic_root: Path, padding: str) -> None:
    config = DataConfig(padding=padding, segment_seconds=4.0, **VERSION_1)
    recordings = load_icbhi_index(synthetic_root)
    assert {r.sample_rate_hz for r in recordings} == {4000, 10000, 44100}
    differs = 0
    for recording in recordings:
        ours = load_cycle_waveforms(recording, config)
        old = _version_1_cycles(recording, config)
        assert all(torch.equal(a, b) for a, b in zip(ours, old, strict=True)), recording.name
        current = load_cycle_waveforms(recording, dataclasses.replace(config, **_CURRENT))
        differs += sum(not torch.equal(a, b) for a, b in zip(current, old, strict=True))
    assert differs > 0  # the comparison can fail: today's defaults do change the cycles


_CURRENT = {"fade": "reference", "cycle_slicing": "truncated", "zero_padding": "centre"}


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "FLOAT"])
def test_read_wav_decodes_pcm_and_float(tmp_path: Path, make_wav, subtype: str) -> None:
    written = make_wav(tmp_path / "a.wav", seconds=0.5, rate=10000, subtype=subtype)
    before = audio_decode_count()
    samples, rate = read_wav(tmp_path / "a.wav")
    assert audio_decode_count() == before + 1
    assert rate == 10000 and samples.dtype == np.float32 and samples.shape == (5000,)
    np.testing.assert_allclose(samples, written, atol=1e-4)
    info = read_audio_info(tmp_path / "a.wav")
    assert (info.sample_rate_hz, info.num_frames, info.channels) == (10000, 5000, 1)
    assert info.subtype == subtype


def test_read_wav_rejects_stereo_nan_and_garbage(tmp_path: Path, make_wav) -> None:
    make_wav(tmp_path / "stereo.wav", channels=2)
    with pytest.raises(ValueError, match="stereo.wav: has 2 channels .* mono"):
        read_wav(tmp_path / "stereo.wav")
    samples = np.zeros(400, dtype=np.float32)
    samples[123] = np.nan
    soundfile.write(str(tmp_path / "nan.wav"), samples, 4000, subtype="FLOAT")
    with pytest.raises(ValueError, match="nan.wav: holds NaN or infinite samples .* 123"):
        read_wav(tmp_path / "nan.wav")
    (tmp_path / "garbage.wav").write_bytes(b"RIFF" + b"\x00" * 64)
    with pytest.raises(ValueError, match="garbage.wav: unreadable wav"):
        read_wav(tmp_path / "garbage.wav")
