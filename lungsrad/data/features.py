"""Cycle waveform -> normalised Kaldi fbank, and the on-disk feature cache of a whole dataset.
Follows the AST/DASS recipe (Gong et al. 2021, `src/dataloader.py`; Saurabhbhati/DASS): 128 mel
bins, 25 ms Hanning windows every 10 ms, (fbank - mean) / (2 * std) with AudioSet statistics
or each cycle's own (the DASS reference code, ICBHI_HADES `util/icbhi_util.py` generate_fbank).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pickle
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchaudio
from torchaudio.compliance import kaldi
from tqdm.auto import tqdm

from lungsrad.config import DataConfig, expected_num_frames
from lungsrad.data.annotations import Recording
from lungsrad.data.icbhi import scan_dataset
from lungsrad.data.waveform import load_cycle_waveforms
from lungsrad.errors import UserError
from lungsrad.files import atomic_destination

# Bump when the feature pipeline changes in a way DataConfig does not show (e.g. slicing rules);
# old cache entries are then simply never hit again. 2: data.fade, cycle_slicing, zero_padding and
# normalization take effect; lungsrad at 638a57c already keyed its entries by them but ignored
# them, so its entries for, e.g., fade reference hold unfaded features.
FEATURE_PIPELINE_VERSION = 2
CACHE_FORMAT = "lungsrad-feature-cache"

# DataConfig fields that do not change the features. Every other field (including fields added
# later) enters the cache key, so a new setting can never silently reuse stale features.
# model_frames is outside: the cache holds the fbank's own frames, resized on the training device.
SETTINGS_OUTSIDE_FINGERPRINT = frozenset(
    {"root", "split_file", "cache_dir", "validation_fraction", "split_seed", "fold", "model_frames"}
)


def compute_fbank(waveform: torch.Tensor, data_config: DataConfig) -> torch.Tensor:
    """Normalised log-mel filterbank of one cycle (see normalize_fbank).

    Args:
        waveform: (samples,) float at data_config.sample_rate_hz.

    Returns:
        (frames, num_mel_bins) float32; (798, 128) for 8 s at 16 kHz with the defaults.
    """
    waveform = waveform.to(torch.float32)
    waveform = waveform - waveform.mean()
    fbank = kaldi.fbank(
        waveform.unsqueeze(0),
        htk_compat=True,
        sample_frequency=float(data_config.sample_rate_hz),
        use_energy=False,
        window_type="hanning",
        num_mel_bins=data_config.num_mel_bins,
        dither=0.0,
        frame_length=data_config.frame_length_ms,
        frame_shift=data_config.frame_shift_ms,
    )
    return normalize_fbank(fbank, data_config)


def normalize_fbank(fbank: torch.Tensor, data_config: DataConfig) -> torch.Tensor:
    """(fbank - mean) / (2 * std): with the AudioSet statistics (data.normalization audioset) or
    with the cycle's own mean and unbiased std (per_example, the DASS reference code).

    Args:
        fbank: (frames, num_mel_bins) float32 log-mel energies of one cycle.

    Returns:
        (frames, num_mel_bins) float32
    """
    if data_config.normalization == "audioset":
        return (fbank - data_config.feature_mean) / (data_config.feature_std * 2.0)
    if data_config.normalization == "per_example":
        # A constant map (digital silence) has std 0; it becomes zeros instead of NaN.
        std = fbank.std().clamp_min(torch.finfo(fbank.dtype).tiny)
        return (fbank - fbank.mean()) / (std * 2.0)
    raise ValueError(
        f"data.normalization must be 'audioset' or 'per_example', got {data_config.normalization!r}"
    )


@dataclass
class FeatureSet:
    """Every cycle of a dataset as features, with its label, patient and official split."""

    features: torch.Tensor  # (num_cycles, frames, mel_bins) float16 (798 x 128 for 8 s)
    labels: torch.Tensor  # (num_cycles,) int64: 0 normal, 1 crackle, 2 wheeze, 3 both
    patient_ids: tuple[str, ...]  # per cycle
    recordings: tuple[str, ...]  # per cycle
    official_split: tuple[str, ...]  # per cycle: "train" | "test"
    fingerprint: str  # hash of input files + every preprocessing setting

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def resize_frames(features: torch.Tensor, frames: int | None) -> torch.Tensor:
    """Resizes a batch of maps along time to the frames the model sees (data.model_frames).

    The reference resizes each (798, 128) map to (1024, 128) with torchvision's `Resize`, which
    on a tensor is bilinear interpolation with antialiasing (half-pixel centres).

    Args:
        features: (batch, frames_in, mel_bins), any float dtype and device.
        frames: target frames; None or equal to frames_in returns `features` itself.

    Returns:
        (batch, frames, mel_bins) float32 (or `features` unchanged).
    """
    if frames is None or frames == features.shape[1]:
        return features
    resized = torch.nn.functional.interpolate(
        features.float().unsqueeze(1),
        size=(frames, features.shape[2]),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    return resized.squeeze(1)


# ---------------------------------------------------------------------------------------------
# Cache


def feature_settings(data_config: DataConfig) -> dict[str, Any]:
    """The DataConfig settings that change features (the settings part of the cache key)."""
    return {
        f.name: getattr(data_config, f.name)
        for f in dataclasses.fields(data_config)
        if f.name not in SETTINGS_OUTSIDE_FINGERPRINT
    }


def dataset_fingerprint(recordings: list[Recording], data_config: DataConfig) -> str:
    """SHA-256 hex of the feature settings, annotations, splits and wav (name, size, mtime_ns)."""
    # Wavs are fingerprinted by stat, not content: hashing the whole database would cost seconds
    # on every load, while rewriting a file changes its mtime (a copy that does not preserve
    # times only costs a rebuild). Annotations and the split enter as parsed values, so the key
    # follows what they mean, not their whitespace or line endings.
    entries = []
    for recording in recordings:
        stat = os.stat(recording.wav_path)
        cycles = [
            [c.start_seconds, c.end_seconds, int(c.crackle), int(c.wheeze)]
            for c in recording.cycles
        ]
        entries.append([recording.name, recording.split, stat.st_size, stat.st_mtime_ns, cycles])
    payload = {
        "pipeline": FEATURE_PIPELINE_VERSION,
        "torchaudio": torchaudio.__version__,
        "settings": feature_settings(data_config),
        "recordings": entries,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def resolve_cache_dir(data_config: DataConfig) -> Path:
    """data_config.cache_dir, or ~/.cache/lungsrad/features when it is None."""
    if data_config.cache_dir is not None:
        return Path(data_config.cache_dir).expanduser()
    return Path.home() / ".cache" / "lungsrad" / "features"


def cache_path_for(fingerprint: str, data_config: DataConfig) -> Path:
    """Where the features with this fingerprint are (or would be) cached."""
    return resolve_cache_dir(data_config) / f"icbhi-{fingerprint}.pt"


_UNREADABLE_CACHE_ERRORS = (
    OSError,
    EOFError,
    RuntimeError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    pickle.UnpicklingError,
)


def _load_cache(path: Path, fingerprint: str) -> FeatureSet | None:
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if stored.get("format") != CACHE_FORMAT or stored.get("fingerprint") != fingerprint:
            raise ValueError("it belongs to other data or another lungsrad version")
        return FeatureSet(
            features=stored["features"],
            labels=stored["labels"],
            patient_ids=tuple(stored["patient_ids"]),
            recordings=tuple(stored["recordings"]),
            official_split=tuple(stored["official_split"]),
            fingerprint=fingerprint,
        )
    except _UNREADABLE_CACHE_ERRORS as error:  # a damaged entry is rebuilt, never trusted
        warnings.warn(
            f"ignoring unreadable feature cache {path} ({error}); rebuilding it", stacklevel=3
        )
        return None


def _save_cache(path: Path, feature_set: FeatureSet) -> None:
    """Writes through a temporary file and a rename: readers never see a torn file."""
    with atomic_destination(path) as tmp_path:
        torch.save(
            {
                "format": CACHE_FORMAT,
                "fingerprint": feature_set.fingerprint,
                "features": feature_set.features,
                "labels": feature_set.labels,
                "patient_ids": list(feature_set.patient_ids),
                "recordings": list(feature_set.recordings),
                "official_split": list(feature_set.official_split),
            },
            tmp_path,
        )


# ---------------------------------------------------------------------------------------------
# Build


@contextlib.contextmanager
def _single_torch_thread() -> Iterator[None]:
    # The per-cycle ops are small (798 x 400 frames): intra-op threads barely help, and on a busy
    # machine OpenMP's waiting threads made a build 15x slower (174 cycles: 1.8 s on one thread,
    # 27 s on two, with other jobs running on the 2 cores). The previous setting is restored.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def compute_feature_set(
    recordings: list[Recording],
    data_config: DataConfig,
    *,
    fingerprint: str = "",
    show_progress: bool = True,
) -> FeatureSet:
    """Decodes each recording once, resamples it once, and computes every cycle's features.

    Returns:
        A FeatureSet with cycles in recording order, then annotation order.
    """
    num_cycles = sum(len(recording.cycles) for recording in recordings)
    features = torch.empty(
        (num_cycles, expected_num_frames(data_config), data_config.num_mel_bins),
        dtype=torch.float16,
    )
    labels, patient_ids, names, splits = [], [], [], []
    position = 0
    progress = tqdm(
        recordings, desc="ICBHI features", unit="recording", disable=None if show_progress else True
    )
    with _single_torch_thread():
        for recording in progress:
            waveforms = load_cycle_waveforms(recording, data_config)
            for cycle, waveform in zip(recording.cycles, waveforms, strict=True):
                features[position] = compute_fbank(waveform, data_config).to(torch.float16)
                labels.append(cycle.label)
                patient_ids.append(recording.patient_id)
                names.append(recording.name)
                splits.append(recording.split)
                position += 1
    return FeatureSet(
        features=features,
        labels=torch.tensor(labels, dtype=torch.int64),
        patient_ids=tuple(patient_ids),
        recordings=tuple(names),
        official_split=tuple(splits),
        fingerprint=fingerprint,
    )


def build_feature_set(
    data_config: DataConfig,
    root: str | os.PathLike[str] | None = None,
    *,
    show_progress: bool = True,
) -> FeatureSet:
    """Features of every cycle of the dataset, from the on-disk cache when it holds them.

    A cache hit parses the annotation and split files and stats the wavs, but decodes no audio.
    A miss validates the data strictly, builds the features and writes the cache atomically, so
    a failed build leaves existing cache entries as they were.

    Args:
        data_config: preprocessing settings, split file and cache folder.
        root: dataset folder; None: data_config.root.
        show_progress: show a progress bar while features are computed.

    Returns:
        FeatureSet with features (num_cycles, frames, mel_bins) float16.

    Raises:
        FileNotFoundError / UserError: one line naming the first problem (file and line).
    """
    if root is None:
        root = data_config.root
    if root is None:
        raise UserError("no dataset folder: set data.root in the config or pass --data DIR")
    scan = scan_dataset(root, data_config.split_file, read_headers=False)
    scan.raise_first_problem()
    for warning in scan.warnings:
        warnings.warn(str(warning), stacklevel=2)
    fingerprint = dataset_fingerprint(scan.recordings, data_config)
    cache_path = cache_path_for(fingerprint, data_config)
    cached = _load_cache(cache_path, fingerprint)
    if cached is not None:
        return cached

    scan = scan_dataset(root, data_config.split_file, read_headers=True)
    scan.raise_first_problem()
    fingerprint = dataset_fingerprint(scan.recordings, data_config)
    feature_set = compute_feature_set(
        scan.recordings, data_config, fingerprint=fingerprint, show_progress=show_progress
    )
    _save_cache(cache_path_for(fingerprint, data_config), feature_set)
    return feature_set
