"""`lungsrad data features`: every cycle's model input (normalised and resized, no augmentation)
written to one .npz, to check a reproduction against a reference or to feed other tools.
Follows the reference's evaluation input (ICBHI_HADES `main.py` set_loader: fbank, Resize).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch

from lungsrad.config import DataConfig, model_input_frames
from lungsrad.data.features import FeatureSet, build_feature_set, resize_frames
from lungsrad.errors import UserError
from lungsrad.files import atomic_destination

# Cycles resized and written per step: the whole (cycles, frames, bins) float32 array of the full
# ICBHI database at 1024 frames is 3.6 GB, so it is streamed into the file, never held at once.
EXPORT_BATCH_CYCLES = 256


@dataclass(frozen=True)
class FeatureExport:
    """What `export_model_inputs` wrote."""

    path: Path
    num_cycles: int
    num_frames: int
    num_mel_bins: int
    num_recordings: int
    fingerprint: str  # the feature cache key the inputs came from

    def format_text(self) -> str:
        """A short human-readable summary."""
        return (
            f"wrote {self.path}: features ({self.num_cycles}, {self.num_frames}, "
            f"{self.num_mel_bins}) float32 from {self.num_recordings} recordings, with labels, "
            f"recordings, cycles, splits\nfeature cache key: {self.fingerprint}"
        )


def check_export_path(out: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """The output path, refused (one-line UserError) unless it is a new or replaceable .npz file.

    Raises:
        UserError: not ending in .npz, a folder, an existing file without `overwrite`, or a
            parent that is not a folder.
    """
    path = Path(out)
    if path.suffix.lower() != ".npz":
        raise UserError(f"--out {path}: the output must be a .npz file (name it FILE.npz)")
    if path.is_dir():
        raise UserError(f"--out {path} is a folder; give a file name ending in .npz")
    if path.exists() and not overwrite:
        raise UserError(f"--out {path} exists; choose another name, or pass --force to replace it")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(f"--out {path}: cannot write in {parent} (permission denied)")
            break
    return path


def cycle_indices(recordings: tuple[str, ...]) -> np.ndarray:
    """Each cycle's index within its recording, for cycles in recording then annotation order.

    Returns:
        (cycles,) int64
    """
    # A FeatureSet holds a recording's cycles next to each other, in annotation order.
    indices = np.empty(len(recordings), dtype=np.int64)
    previous, count = None, 0
    for position, name in enumerate(recordings):
        count = count + 1 if name == previous else 0
        indices[position], previous = count, name
    return indices


def export_model_inputs(
    data_config: DataConfig,
    out: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> FeatureExport:
    """Writes the model input of every cycle, as evaluation sees it, to an .npz file atomically.

    The inputs come from the feature cache (build_feature_set; built and cached on a miss): its
    float16 fbank maps upcast to float32 and resized to data.model_frames with resize_frames,
    which is what training and evaluation feed the model.

    Args:
        data_config: preprocessing settings (data.root, split file, cache folder included).
        out: the .npz file to write.
        root: dataset folder; None: data_config.root.
        overwrite: replace an existing `out`.

    Returns:
        What was written. The file holds `features` (cycles, frames, bins) float32, `labels`
        (cycles,) int64, `recordings` and `splits` (cycles,) str, and `cycles` (cycles,) int64
        (index within the recording), in recording-name then annotation order.

    Raises:
        UserError / FileNotFoundError: bad data, config or output path (one line).
    """
    path = check_export_path(out, overwrite=overwrite)
    feature_set = build_feature_set(data_config, root, show_progress=show_progress)
    frames = model_input_frames(data_config)
    try:
        with atomic_destination(path) as tmp_path:
            _write_npz(tmp_path, feature_set, frames)
    except PermissionError as error:
        raise UserError(f"--out {path}: {error.strerror or error}") from None
    return FeatureExport(
        path=path,
        num_cycles=len(feature_set),
        num_frames=frames,
        num_mel_bins=int(feature_set.features.shape[2]),
        num_recordings=len(set(feature_set.recordings)),
        fingerprint=feature_set.fingerprint,
    )


def _write_npz(path: Path, feature_set: FeatureSet, frames: int) -> None:
    """np.savez's layout (one .npy member per array), `features` streamed batch by batch."""
    num_cycles, _, num_bins = feature_set.features.shape
    arrays = {
        "labels": feature_set.labels.numpy().astype(np.int64),
        "recordings": np.array(feature_set.recordings, dtype=str),
        "cycles": cycle_indices(feature_set.recordings),
        "splits": np.array(feature_set.official_split, dtype=str),
    }
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("features.npy", "w", force_zip64=True) as stream:
            _stream_features(stream, feature_set.features, frames, num_cycles, num_bins)
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as stream:
                np.lib.format.write_array(stream, array, allow_pickle=False)


def _stream_features(
    stream: IO[bytes], features: torch.Tensor, frames: int, num_cycles: int, num_bins: int
) -> None:
    header = {
        "descr": np.dtype("<f4").str,
        "fortran_order": False,
        "shape": (num_cycles, frames, num_bins),
    }
    np.lib.format.write_array_header_1_0(stream, header)
    for start in range(0, num_cycles, EXPORT_BATCH_CYCLES):
        batch = features[start : start + EXPORT_BATCH_CYCLES].float()
        resized = resize_frames(batch, frames).to(torch.float32).contiguous()
        stream.write(resized.numpy().astype("<f4", copy=False).tobytes())
