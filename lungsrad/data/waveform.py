"""Cycle waveforms of an ICBHI recording: wav reading (header and samples), resampling, fades,
slicing and padding, as the patch-mix / DASS reference code does (`util/icbhi_util.py`: resample
and fade the recording, slice, pad), with switches for lungsrad 1's choices (DataConfig: fade,
cycle_slicing, zero_padding). torch is imported inside the waveform functions only, so
`lungsrad data inspect` starts fast.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile

from lungsrad.config import DataConfig
from lungsrad.data.annotations import Recording, cycle_position_problem
from lungsrad.errors import UserError

if TYPE_CHECKING:
    import torch

_decode_count = 0


def audio_decode_count() -> int:
    """How many times audio samples were decoded in this process (headers not counted)."""
    return _decode_count


@dataclass(frozen=True)
class AudioInfo:
    """What the wav header says."""

    sample_rate_hz: int
    num_frames: int
    channels: int
    subtype: str

    @property
    def duration_seconds(self) -> float:
        return self.num_frames / self.sample_rate_hz


def read_audio_info(path: str | os.PathLike[str]) -> AudioInfo:
    """Reads a wav header (no samples decoded).

    Raises:
        UserError: the file is not readable audio.
    """
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise UserError(f"{path}: unreadable wav ({error})") from None
    return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels), info.subtype)


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Decodes a mono wav (PCM 16/24/32-bit or float) to float32 in [-1, 1].

    Returns:
        (samples (num_frames,) float32, sample rate in Hz).

    Raises:
        UserError: unreadable, not mono, empty, or holding NaN/inf samples.
    """
    global _decode_count
    _decode_count += 1
    try:
        samples, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise UserError(f"{path}: unreadable wav ({error})") from None
    check_audio_samples(path, samples)
    return np.ascontiguousarray(samples[:, 0]), int(sample_rate)


EMPTY_WAV_MESSAGE = "the wav file holds no samples"


def channels_message(channels: int) -> str:
    """What is wrong with a wav of `channels` channels, and how to fix it."""
    return (
        f"has {channels} channels but ICBHI recordings are mono; mix it down to one channel "
        "(e.g. `sox in.wav out.wav remix -`)"
    )


def check_audio_samples(path: str | os.PathLike[str], samples: np.ndarray) -> None:
    """UserError naming `path` unless samples (frames, channels) are mono, finite, non-empty."""
    if samples.shape[1] != 1:
        raise UserError(f"{path}: {channels_message(samples.shape[1])}")
    if samples.shape[0] == 0:
        raise UserError(f"{path}: {EMPTY_WAV_MESSAGE}")
    finite = np.isfinite(samples[:, 0])
    if not finite.all():
        first = int(np.argmin(finite))
        raise UserError(
            f"{path}: holds NaN or infinite samples (first at sample {first}); "
            "re-export the recording"
        )


# The reference fades 1/16 s (int(rate / 16): 1000 samples at 16 kHz) in and out of every recording
# and out of every repeat-padded cycle (util/icbhi_util.py, `fade_samples_ratio = 16`).
FADE_FRACTION_OF_A_SECOND = 16


def fade_length(rate_hz: int) -> int:
    """Samples of the reference's linear fades at `rate_hz`: int(rate / 16)."""
    return int(rate_hz / FADE_FRACTION_OF_A_SECOND)


@functools.lru_cache(maxsize=32)
def _resample_transform(source_rate_hz: int, target_rate_hz: int) -> Any:
    # torchaudio's Resample precomputes its sinc kernel: build it once per rate pair.
    import torchaudio

    return torchaudio.transforms.Resample(source_rate_hz, target_rate_hz)


def resample(
    waveform: torch.Tensor,
    source_rate_hz: int,
    target_rate_hz: int,
    *,
    use_transform: bool = False,
) -> torch.Tensor:
    """Band-limited resampling of a whole recording: (samples,) -> (samples * target / source,).

    Args:
        use_transform: torchaudio.transforms.Resample (the reference code, data.cycle_slicing
            truncated) instead of torchaudio.functional.resample (lungsrad 1, rounded). Same
            filter; the transform's precomputed kernel differs in the last bits (about 1e-5).
    """
    import torchaudio

    if source_rate_hz == target_rate_hz:
        return waveform
    if use_transform:
        return _resample_transform(source_rate_hz, target_rate_hz)(waveform)
    return torchaudio.functional.resample(waveform, source_rate_hz, target_rate_hz)


def apply_fade(
    waveform: torch.Tensor, *, fade_in_samples: int, fade_out_samples: int
) -> torch.Tensor:
    """Linear fade in and out with torchaudio.transforms.Fade, as the reference code fades.

    Args:
        waveform: (samples,); fades longer than the waveform are shortened to its length (the
            reference never meets such a waveform: recordings are seconds, cycles 8 s).

    Returns:
        (samples,)
    """
    import torchaudio

    length = waveform.shape[-1]
    fade = torchaudio.transforms.Fade(
        fade_in_len=min(fade_in_samples, length),
        fade_out_len=min(fade_out_samples, length),
        fade_shape="linear",
    )
    return fade(waveform)


def fit_to_length(
    waveform: torch.Tensor,
    num_samples: int,
    padding: str,
    *,
    zero_padding: str = "end",
    fade_out_samples: int = 0,
) -> torch.Tensor:
    """Cuts or pads a cycle to exactly `num_samples`, as the reference's cut_pad_sample does.

    A cycle longer than `num_samples` is cut to its first `num_samples`; any other (equal length
    included) is padded: tiled and cropped, then faded out ("repeat"), or placed among zeros
    without a fade ("zero").

    Args:
        waveform: (samples,), at least one sample.
        num_samples: target length.
        padding: "repeat" tiles the cycle (reference default), "zero" pads with zeros.
        zero_padding: "centre" puts the cycle at offset (num_samples - samples) // 2 (reference),
            "end" appends the zeros (lungsrad 1).
        fade_out_samples: linear fade-out of a repeat-padded cycle (0: none).

    Returns:
        (num_samples,)
    """
    import torch

    length = waveform.shape[-1]
    if length == 0:
        raise ValueError("cannot pad an empty cycle")
    if padding not in ("repeat", "zero"):
        raise ValueError(f"data.padding must be 'repeat' or 'zero', got {padding!r}")
    if zero_padding not in ("centre", "end"):
        raise ValueError(f"data.zero_padding must be 'centre' or 'end', got {zero_padding!r}")
    if length > num_samples:
        return waveform[:num_samples]
    if padding == "zero":
        before = (num_samples - length) // 2 if zero_padding == "centre" else 0
        return torch.nn.functional.pad(waveform, (before, num_samples - length - before))
    tiled = waveform.repeat(math.ceil(num_samples / length))[:num_samples]
    if fade_out_samples:
        tiled = apply_fade(tiled, fade_in_samples=0, fade_out_samples=fade_out_samples)
    return tiled


def sample_index(seconds: float, rate_hz: int, cycle_slicing: str) -> int:
    """The sample at `seconds`: int(t * rate) ("truncated", the reference) or
    floor(t * rate + 1e-6) ("rounded", lungsrad 1: 0.3 s * 16 kHz is 4800, not 4799)."""
    if cycle_slicing == "truncated":
        return int(seconds * rate_hz)
    if cycle_slicing == "rounded":
        return int(math.floor(seconds * rate_hz + 1e-6))
    raise ValueError(f"data.cycle_slicing must be 'truncated' or 'rounded', got {cycle_slicing!r}")


def slice_cycles(
    waveform: torch.Tensor,
    recording: Recording,
    *,
    source_duration_seconds: float,
    data_config: DataConfig,
) -> list[torch.Tensor]:
    """Slices every cycle of `recording` out of its resampled waveform and fits it to length.

    Args:
        waveform: (samples,) the whole recording at data_config.sample_rate_hz (already faded
            when data.fade is "reference").
        source_duration_seconds: duration of the original file (for the end tolerance).

    Returns:
        One (segment_seconds * sample_rate_hz,) tensor per cycle.
    """
    rate = data_config.sample_rate_hz
    num_samples = int(round(data_config.segment_seconds * rate))
    fade_out = fade_length(rate) if data_config.fade == "reference" else 0
    segments = []
    for cycle in recording.cycles:
        problem = cycle_position_problem(cycle, source_duration_seconds)
        if problem is not None:
            raise UserError(f"{recording.annotation_path}:{cycle.line}: {problem}")
        start = sample_index(cycle.start_seconds, rate, data_config.cycle_slicing)
        end = sample_index(cycle.end_seconds, rate, data_config.cycle_slicing)
        end = min(end, waveform.shape[-1])
        if end <= start:
            raise UserError(
                f"{recording.annotation_path}:{cycle.line}: cycle is shorter than one sample at "
                f"{rate} Hz"
            )
        segment = fit_to_length(
            waveform[start:end],
            num_samples,
            data_config.padding,
            zero_padding=data_config.zero_padding,
            fade_out_samples=fade_out,
        )
        segments.append(segment)
    return segments


def prepare_recording(
    samples: torch.Tensor, source_rate_hz: int, data_config: DataConfig
) -> torch.Tensor:
    """A whole decoded recording as the cycles are cut from it: resampled to
    data.sample_rate_hz, then (data.fade "reference") faded in and out.

    Args:
        samples: (samples,) float32 at source_rate_hz.

    Returns:
        (samples * sample_rate_hz / source_rate_hz,) float32
    """
    rate = data_config.sample_rate_hz
    waveform = resample(
        samples, source_rate_hz, rate, use_transform=data_config.cycle_slicing == "truncated"
    )
    if data_config.fade == "reference":
        fade = fade_length(rate)
        waveform = apply_fade(waveform, fade_in_samples=fade, fade_out_samples=fade)
    return waveform


def load_cycle_waveforms(recording: Recording, data_config: DataConfig) -> list[torch.Tensor]:
    """Decodes a recording once, resamples (and fades) it once, and returns its cycles.

    Returns:
        One float32 tensor (segment_seconds * sample_rate_hz,) per cycle (8 s at 16 kHz:
        (128000,)), in annotation order.

    Raises:
        UserError: unreadable/stereo/NaN audio, or a cycle outside the recording.
    """
    import torch

    samples, source_rate = read_wav(recording.wav_path)
    waveform = prepare_recording(torch.from_numpy(samples), source_rate, data_config)
    return slice_cycles(
        waveform,
        recording,
        source_duration_seconds=samples.shape[0] / source_rate,
        data_config=data_config,
    )


# ---------------------------------------------------------------------------------------------
# Folder scan
