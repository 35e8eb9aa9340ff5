"""The sounds of synthetic ICBHI recordings (lungsrad/data/synthetic.py): band-limited breath
noise; crackles as short broadband transients; wheezes as sustained narrowband tones (100-1000 Hz)
with harmonics, following the clinical descriptions the ICBHI labels stand for (Rocha et al., 2019).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _fast_fft_length(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: FFTs of lengths with large prime factors are 100x slower."""
    best = 1 << max(n - 1, 1).bit_length()
    power_of_five = 1
    while power_of_five < best:
        candidate = power_of_five
        while candidate < best:
            length = candidate
            while length < n:
                length *= 2
            best = min(best, length)
            candidate *= 3
        power_of_five *= 5
    return best


def _band_noise(rng: np.random.Generator, n: int, rate: int, low: float, high: float) -> np.ndarray:
    """Unit-RMS noise with energy only in [low, high] Hz (FFT masking)."""
    size = _fast_fft_length(n)
    spectrum = np.fft.rfft(rng.standard_normal(size))
    frequencies = np.fft.rfftfreq(size, 1.0 / rate)
    spectrum[(frequencies < low) | (frequencies > high)] = 0.0
    noise = np.fft.irfft(spectrum, size)[:n]
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def _breath_envelope(n: int) -> np.ndarray:
    """Inspiration hump (first 40 %) then a softer expiration hump."""
    u = np.linspace(0.0, 1.0, n, endpoint=False)
    inspiration = np.sin(np.pi * np.clip(u / 0.4, 0.0, 1.0))
    expiration = 0.6 * np.sin(np.pi * np.clip((u - 0.4) / 0.6, 0.0, 1.0))
    return np.where(u < 0.4, inspiration, expiration) + 0.05


def _add_crackles(rng: np.random.Generator, segment: np.ndarray, rate: int) -> None:
    """Short (2-8 ms) damped transients with a sharp onset: broadband clicks."""
    for _ in range(int(rng.integers(8, 18))):
        duration = float(rng.uniform(0.002, 0.008))
        length = max(int(duration * rate), 4)
        position = int(rng.integers(0, max(len(segment) - length, 1)))
        t = np.arange(length) / rate
        frequency = float(rng.uniform(300.0, 0.4 * rate if rate < 5000 else 2000.0))
        click = np.exp(-t / (duration / 4)) * np.sin(2 * np.pi * frequency * t + np.pi / 2)
        amplitude = float(rng.uniform(0.5, 0.9)) * rng.choice((-1.0, 1.0))
        end = min(position + length, len(segment))
        segment[position:end] += amplitude * click[: end - position]


def _add_wheeze(rng: np.random.Generator, segment: np.ndarray, rate: int) -> None:
    """A sustained tone (150-900 Hz) gliding by up to 8 %, with up to two harmonics."""
    n = len(segment)
    start = int(rng.uniform(0.0, 0.15) * n)
    end = start + int(rng.uniform(0.7, 0.85) * n)
    length = end - start
    fundamental = float(rng.uniform(150.0, 900.0))
    glide = np.linspace(1.0, float(rng.uniform(0.92, 1.08)), length)
    phase = 2 * np.pi * np.cumsum(fundamental * glide) / rate
    tone = np.sin(phase)
    for harmonic, weight in ((2, 0.5), (3, 0.25)):
        if harmonic * fundamental * 1.1 < 0.45 * rate:
            tone += weight * np.sin(harmonic * phase)
    fade = min(int(0.03 * rate), length // 4)
    ramp = np.ones(length)
    ramp[:fade] = np.linspace(0.0, 1.0, fade)
    ramp[length - fade :] = np.linspace(1.0, 0.0, fade)
    segment[start:end] += float(rng.uniform(0.35, 0.55)) * tone * ramp


def synthesize_recording(
    rng: np.random.Generator,
    *,
    sample_rate_hz: int,
    duration_seconds: float,
    cycles: Sequence[tuple[float, float, int]],
) -> np.ndarray:
    """A recording's audio: sensor noise, and each cycle (start s, end s, label) breathed with
    crackles (labels 1, 3) and a wheeze (labels 2, 3); peak-normalised float32 (samples,)."""
    rate = sample_rate_hz
    num_samples = int(round(duration_seconds * rate))
    audio = 0.004 * rng.standard_normal(num_samples)  # sensor noise
    breath = _band_noise(rng, num_samples, rate, 100.0, 900.0)
    for start, end, label in cycles:
        first, last = int(start * rate), min(int(end * rate), num_samples)
        segment = (
            float(rng.uniform(0.08, 0.14)) * breath[first:last] * _breath_envelope(last - first)
        )
        if label in (1, 3):
            _add_crackles(rng, segment, rate)
        if label in (2, 3):
            _add_wheeze(rng, segment, rate)
        audio[first:last] += segment
    peak = float(np.max(np.abs(audio)))
    return (audio * (float(rng.uniform(0.5, 0.9)) / peak)).astype(np.float32)
