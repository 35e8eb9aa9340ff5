"""Feature-cache benchmark: build features for ~1,000 synthetic cycles cold, then from the cache.

Usage: python benchmarks/features_cache.py [--recordings 230] [--seed 0] [--work-dir DIR]
Prints the cycle count, both build times, their ratio, how many recordings each build decoded and
the machine's load average (other jobs on the same cores slow the cold build several-fold).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from lungsrad.config import DataConfig
from lungsrad.data.features import build_feature_set
from lungsrad.data.synthetic import write_synthetic_dataset
from lungsrad.data.waveform import audio_decode_count


def run(work_dir: Path, *, num_recordings: int, seed: int, show_progress: bool) -> dict:
    data_dir, cache_dir = work_dir / "data", work_dir / "cache"
    start = time.perf_counter()
    summary = write_synthetic_dataset(data_dir, num_recordings=num_recordings, seed=seed)
    synth_seconds = time.perf_counter() - start
    config = DataConfig(root=str(data_dir), cache_dir=str(cache_dir))

    decodes = audio_decode_count()
    start = time.perf_counter()
    cold = build_feature_set(config, show_progress=show_progress)
    cold_seconds = time.perf_counter() - start
    cold_decodes = audio_decode_count() - decodes

    decodes = audio_decode_count()
    start = time.perf_counter()
    cached = build_feature_set(config, show_progress=show_progress)
    cached_seconds = time.perf_counter() - start
    cached_decodes = audio_decode_count() - decodes

    assert torch.equal(cold.features, cached.features)
    cache_bytes = sum(path.stat().st_size for path in cache_dir.glob("*.pt"))
    return {
        "recordings": summary.num_recordings,
        "cycles": len(cold),
        "feature_shape": list(cold.features.shape),
        "synth_seconds": round(synth_seconds, 3),
        "cold_seconds": round(cold_seconds, 3),
        "cached_seconds": round(cached_seconds, 3),
        "speedup": round(cold_seconds / cached_seconds, 1),
        "cold_decodes": cold_decodes,
        "cached_decodes": cached_decodes,
        "cache_megabytes": round(cache_bytes / 2**20, 1),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),  # other jobs on the machine skew times
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=230, help="~4.3 cycles per recording")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="empty folder; default: a temporary one"
    )
    parser.add_argument("--progress", action="store_true", help="show the progress bar")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.work_dir is not None and args.work_dir.exists() and any(args.work_dir.iterdir()):
        parser.error(f"--work-dir {args.work_dir} must be empty or absent (a cold build needs it)")
    with tempfile.TemporaryDirectory(prefix="lungsrad-bench-") as tmp:
        work_dir = args.work_dir if args.work_dir is not None else Path(tmp)
        result = run(
            work_dir, num_recordings=args.recordings, seed=args.seed, show_progress=args.progress
        )
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['cycles']} cycles from {result['recordings']} synthetic recordings "
        f"(features {tuple(result['feature_shape'])} float16, "
        f"cache {result['cache_megabytes']} MiB; {result['cpu_count']} CPUs, "
        f"load average {result['load_average_1min']})"
    )
    print(f"  cold build:   {result['cold_seconds']:8.3f} s  ({result['cold_decodes']} decodes)")
    print(
        f"  cached build: {result['cached_seconds']:8.3f} s  ({result['cached_decodes']} decodes)"
    )
    print(f"  ratio cold / cached: {result['speedup']}x")


if __name__ == "__main__":
    main()
