"""Features: fbank shape and normalisation, the on-disk cache (hit without decoding, fingerprint,
atomic and corruption-safe writes)."""

from __future__ import annotations

import dataclasses
import io
import math
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchaudio.compliance import kaldi

from lungsrad.config import DataConfig
from lungsrad.data.features import (
    FeatureSet,
    build_feature_set,
    compute_fbank,
    compute_feature_set,
    dataset_fingerprint,
    expected_num_frames,
    normalize_fbank,
    resolve_cache_dir,
)
from lungsrad.data.icbhi import load_icbhi_index
from lungsrad.data.waveform import audio_decode_count

TRAIN = "101_1b1_Al_sc_Meditron"


def test_eight_second_cycle_gives_798_by_128() -> None:
    waveform = torch.randn(128000, generator=torch.Generator().manual_seed(0))
    assert compute_fbank(waveform, DataConfig()).shape == (798, 128)
    assert expected_num_frames(DataConfig()) == 798
    short = DataConfig(segment_seconds=2.0, num_mel_bins=64)
    assert compute_fbank(torch.randn(32000), short).shape == (expected_num_frames(short), 64)


def test_fbank_matches_kaldi_on_the_mean_removed_waveform_then_normalises() -> None:
    waveform = 0.3 + 0.1 * torch.randn(128000, generator=torch.Generator().manual_seed(1))
    direct = kaldi.fbank(
        (waveform - waveform.mean()).unsqueeze(0),
        htk_compat=True,
        sample_frequency=16000,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=128,
        dither=0.0,
        frame_shift=10,
        frame_length=25,
    )
    expected = (direct - (-4.2677393)) / (4.5689974 * 2)
    torch.testing.assert_close(compute_fbank(waveform, DataConfig()), expected)


def test_silence_maps_to_the_hand_computed_constant() -> None:
    # Kaldi floors the mel energy at float32 eps: log(eps) = -15.942385; then
    # (-15.942385 + 4.2677393) / (2 * 4.5689974) = -11.674646 / 9.1379948 = -1.2775938.
    features = compute_fbank(torch.zeros(128000), DataConfig())
    value = (math.log(torch.finfo(torch.float32).eps) + 4.2677393) / (2 * 4.5689974)
    assert value == pytest.approx(-1.2775938, abs=1e-6)
    torch.testing.assert_close(features, torch.full((798, 128), value), atol=1e-5, rtol=0)


def test_build_returns_every_cycle_in_order(small_dataset: Path, data_config: DataConfig) -> None:
    features = build_feature_set(data_config, small_dataset, show_progress=False)
    assert isinstance(features, FeatureSet) and len(features) == 4
    assert features.features.shape == (4, 798, 128)
    assert features.features.dtype == torch.float16
    assert features.labels.tolist() == [0, 1, 2, 3]
    assert features.labels.dtype == torch.int64
    assert features.patient_ids == ("101", "101", "102", "102")
    assert features.recordings == (TRAIN, TRAIN, "102_1b1_Ar_sc_Meditron", "102_1b1_Ar_sc_Meditron")
    assert features.official_split == ("train", "train", "test", "test")
    assert len(features.fingerprint) == 64
    assert torch.isfinite(features.features.float()).all()
    again = pickle.loads(pickle.dumps(features))  # goes through Ray's object store
    assert torch.equal(again.features, features.features) and again.labels.tolist() == [0, 1, 2, 3]


def test_second_build_reads_the_cache_without_decoding(
    small_dataset: Path, data_config: DataConfig
) -> None:
    before = audio_decode_count()
    first = build_feature_set(data_config, small_dataset, show_progress=False)
    assert audio_decode_count() == before + 2
    cache_files = list(Path(data_config.cache_dir).glob("*.pt"))
    assert [p.name for p in cache_files] == [f"icbhi-{first.fingerprint}.pt"]
    second = build_feature_set(data_config, small_dataset, show_progress=False)
    assert audio_decode_count() == before + 2  # no audio decoded for the cache hit
    assert torch.equal(first.features, second.features)
    assert second.fingerprint == first.fingerprint
    assert (second.patient_ids, second.official_split) == (first.patient_ids, first.official_split)


def test_progress_bar_can_be_shown_and_hidden(
    small_dataset: Path,
    data_config: DataConfig,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Not a terminal (a log file, a captured stream): no bar, so error lines stay alone.
    build_feature_set(data_config, small_dataset, show_progress=True)
    assert "ICBHI features" not in capsys.readouterr().err

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    build_feature_set(
        dataclasses.replace(data_config, padding="zero", segment_seconds=3.0),
        small_dataset,
        show_progress=True,
    )
    monkeypatch.undo()
    assert "ICBHI features" in terminal.getvalue()
    build_feature_set(
        dataclasses.replace(data_config, padding="zero"), small_dataset, show_progress=False
    )
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("sample_rate_hz", 8000),
        ("segment_seconds", 4.0),
        ("padding", "zero"),
        ("num_mel_bins", 64),
        ("frame_length_ms", 20.0),
        ("frame_shift_ms", 20.0),
        ("feature_mean", 0.0),
        ("feature_std", 1.0),
        ("normalization", "per_example"),
        ("fade", "none"),
        ("cycle_slicing", "rounded"),
        ("zero_padding", "end"),
    ],
)
def test_fingerprint_changes_with_every_feature_setting(
    small_dataset: Path, key: str, value: object
) -> None:
    recordings = load_icbhi_index(small_dataset)
    base = dataset_fingerprint(recordings, DataConfig())
    assert dataset_fingerprint(recordings, DataConfig(**{key: value})) != base


def test_fingerprint_ignores_paths_cache_and_split_settings(small_dataset: Path) -> None:
    recordings = load_icbhi_index(small_dataset)
    base = dataset_fingerprint(recordings, DataConfig())
    other = DataConfig(root="/elsewhere", cache_dir="/tmp/x", validation_fraction=0.5, split_seed=3)
    assert dataset_fingerprint(recordings, other) == base


def test_fingerprint_changes_when_a_file_changes(small_dataset: Path, make_wav) -> None:
    base = dataset_fingerprint(load_icbhi_index(small_dataset), DataConfig())
    wav = small_dataset / f"{TRAIN}.wav"
    stat = wav.stat()
    make_wav(wav, seconds=3.0, rate=4000, samples=np.zeros(12000, dtype=np.float32))
    os.utime(wav, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # same size, new mtime
    assert wav.stat().st_size == stat.st_size
    changed_wav = dataset_fingerprint(load_icbhi_index(small_dataset), DataConfig())
    assert changed_wav != base

    annotation = small_dataset / f"{TRAIN}.txt"
    annotation.write_text(annotation.read_text().replace("1.2\t2.0\t1\t0", "1.2\t2.0\t0\t0"))
    changed_label = dataset_fingerprint(load_icbhi_index(small_dataset), DataConfig())
    assert changed_label not in (base, changed_wav)


def test_changed_data_is_rebuilt(small_dataset: Path, data_config: DataConfig) -> None:
    first = build_feature_set(data_config, small_dataset, show_progress=False)
    annotation = small_dataset / f"{TRAIN}.txt"
    annotation.write_text(annotation.read_text() + "2.1\t2.9\t1\t1\n")
    before = audio_decode_count()
    second = build_feature_set(data_config, small_dataset, show_progress=False)
    assert audio_decode_count() == before + 2
    assert len(second) == 5 and second.fingerprint != first.fingerprint
    assert len(list(Path(data_config.cache_dir).glob("*.pt"))) == 2


def test_failed_build_leaves_the_cache_untouched(
    small_dataset: Path, data_config: DataConfig
) -> None:
    build_feature_set(data_config, small_dataset, show_progress=False)
    cache_dir = Path(data_config.cache_dir)
    snapshot = {path.name: path.read_bytes() for path in cache_dir.iterdir()}
    (small_dataset / "102_1b1_Ar_sc_Meditron.wav").write_bytes(b"RIFF not really a wav")
    with pytest.raises(ValueError, match="102_1b1_Ar_sc_Meditron.wav: unreadable wav"):
        build_feature_set(data_config, small_dataset, show_progress=False)
    assert {path.name: path.read_bytes() for path in cache_dir.iterdir()} == snapshot


def test_damaged_cache_entry_is_rebuilt_with_a_warning(
    small_dataset: Path, data_config: DataConfig
) -> None:
    first = build_feature_set(data_config, small_dataset, show_progress=False)
    (entry,) = Path(data_config.cache_dir).glob("*.pt")
    entry.write_bytes(entry.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="ignoring unreadable feature cache"):
        rebuilt = build_feature_set(data_config, small_dataset, show_progress=False)
    assert torch.equal(rebuilt.features, first.features)
    assert not list(Path(data_config.cache_dir).glob(".*.tmp"))


def test_cache_dir_comes_from_the_config(tmp_path: Path) -> None:
    assert resolve_cache_dir(DataConfig(cache_dir=str(tmp_path / "c"))) == tmp_path / "c"
    assert resolve_cache_dir(DataConfig()) == Path.home() / ".cache" / "lungsrad" / "features"


def test_per_example_normalisation_uses_the_cycles_own_mean_and_unbiased_std() -> None:
    waveform = 0.1 * torch.randn(128000, generator=torch.Generator().manual_seed(2))
    audioset = compute_fbank(waveform, DataConfig())
    fbank = audioset * (2 * 4.5689974) - 4.2677393  # back to the log-mel energies
    per_example = compute_fbank(waveform, DataConfig(normalization="per_example"))
    expected = (fbank - fbank.mean()) / (2 * torch.std(fbank, unbiased=True))
    torch.testing.assert_close(per_example, expected, atol=1e-5, rtol=0)
    assert per_example.mean().abs() < 1e-5 and per_example.std().item() == pytest.approx(0.5)
    silence = compute_fbank(torch.zeros(128000), DataConfig(normalization="per_example"))
    assert torch.isfinite(silence).all() and silence.min() == silence.max()
    constant = normalize_fbank(
        torch.full((798, 128), -16.0), DataConfig(normalization="per_example")
    )
    assert torch.equal(constant, torch.zeros_like(constant))  # not NaN: its std is 0


# Each new data key, with a base where changing it changes the features (zero_padding acts on
# zero padding only; the base cycles are shorter than the 2-s segment, so they are padded).
_NEW_KEYS = [
    ("normalization", "audioset", "per_example"),
    ("fade", "reference", "none"),
    ("cycle_slicing", "truncated", "rounded"),
    ("zero_padding", "centre", "end"),
]


def test_no_two_settings_of_a_new_data_key_share_a_cache_entry(
    small_dataset: Path, data_config: DataConfig
) -> None:
    base = dataclasses.replace(data_config, padding="zero", segment_seconds=2.0)
    built = {}
    for key, first, second in _NEW_KEYS:
        for value in (first, second):
            config = dataclasses.replace(base, **{key: value})
            before = audio_decode_count()
            features = build_feature_set(config, small_dataset, show_progress=False)
            fresh = compute_feature_set(
                load_icbhi_index(small_dataset), config, show_progress=False
            )
            assert torch.equal(features.features, fresh.features), (key, value)
            built[(key, value)] = (features, audio_decode_count() - before)
        (one, _), (other, decoded) = built[(key, first)], built[(key, second)]
        assert other.fingerprint != one.fingerprint
        assert decoded >= 2  # the second setting decoded audio: no reuse of the first's entry
        assert not torch.equal(one.features, other.features), key
    entries = list(Path(data_config.cache_dir).glob("icbhi-*.pt"))
    assert len(entries) == len({f.fingerprint for f, _ in built.values()})
    # model_frames is resized on the training device: it shares the fbank's entry.
    before = audio_decode_count()
    build_feature_set(
        dataclasses.replace(base, model_frames=256), small_dataset, show_progress=False
    )
    assert audio_decode_count() == before
