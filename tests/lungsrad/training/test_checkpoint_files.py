"""Checkpoint files: atomic writes survive an interrupted write, damaged files are skipped on
resume, old epochs are pruned, and a config change is refused."""

from __future__ import annotations

import os

import pytest
import torch

from lungsrad.checkpoint_format import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_FORMAT_VERSION,
    CheckpointError,
    read_lungsrad_checkpoint,
)
from lungsrad.config import apply_overrides, config_from_dict, dump_config
from lungsrad.training.checkpoint_files import (
    CHECKPOINT_FILE,
    check_resume_config,
    epoch_checkpoints,
    epoch_folder,
    find_resumable_checkpoint,
    prune_checkpoints,
    read_resumable_checkpoint,
    remove_stale_temporary_files,
    save_atomic,
)
from tests.processes import Held


def _payload(epoch: int) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "config": dump_config(config_from_dict({})),
        "model": {"weight": torch.full((3,), float(epoch))},
        "objective": {},
        "optimizer": {},
        "scheduler": {},
        "epoch": epoch,
        "history": [{"epoch": float(e)} for e in range(1, epoch + 1)],
        "best": None,
    }


class ExplodesWhenPickled:
    """Stands for a write that dies midway (disk full, kill): pickling fails after bytes were
    already written to the temporary file."""

    def __reduce__(self):
        raise OSError("simulated failure in the middle of the write")


def test_an_interrupted_write_never_replaces_the_previous_checkpoint(tmp_path):
    path = epoch_folder(tmp_path, 1) / CHECKPOINT_FILE
    save_atomic(_payload(1), path)
    before = path.read_bytes()
    broken = _payload(2)
    broken["model"] = {"weight": torch.zeros(1000), "tail": ExplodesWhenPickled()}
    with pytest.raises(OSError, match="simulated failure"):
        save_atomic(broken, path)
    assert path.read_bytes() == before
    assert read_resumable_checkpoint(path)["epoch"] == 1
    assert os.listdir(path.parent) == [CHECKPOINT_FILE]  # no temporary file left behind


def test_a_truncated_latest_checkpoint_is_skipped_with_a_warning(tmp_path):
    for epoch in (1, 2, 3):
        save_atomic(_payload(epoch), epoch_folder(tmp_path, epoch) / CHECKPOINT_FILE)
    latest = epoch_folder(tmp_path, 3) / CHECKPOINT_FILE
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_lungsrad_checkpoint(latest)
    with pytest.warns(UserWarning, match="skipping corrupt checkpoint.*epoch_0003"):
        path, payload = find_resumable_checkpoint(tmp_path)
    assert payload["epoch"] == 2 and path == epoch_folder(tmp_path, 2) / CHECKPOINT_FILE


def test_files_that_are_not_lungsrad_checkpoints_are_refused(tmp_path):
    plain = tmp_path / "state_dict.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not a lungsrad training checkpoint"):
        read_lungsrad_checkpoint(plain)
    best_like = tmp_path / "best.pt"
    payload = _payload(1)
    del payload["optimizer"]
    torch.save(payload, best_like)
    with pytest.raises(CheckpointError, match="missing optimizer"):
        read_resumable_checkpoint(best_like)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        read_lungsrad_checkpoint(tmp_path / "missing.pt")


def test_prune_keeps_the_newest_and_the_selected_epochs(tmp_path):
    for epoch in range(1, 7):
        save_atomic(_payload(epoch), epoch_folder(tmp_path, epoch) / CHECKPOINT_FILE)
    prune_checkpoints(tmp_path, keep_last=2, keep_epochs={2})
    assert [epoch for epoch, _ in epoch_checkpoints(tmp_path)] == [2, 5, 6]


def test_resume_config_check_ignores_paths_but_not_training_settings(tmp_path):
    saved = config_from_dict({"data": {"root": "/a"}})
    moved = apply_overrides(
        saved, {"data.root": "/b", "data.cache_dir": "/c", "train.num_threads": 2}
    )
    check_resume_config(saved, moved, path=tmp_path / "x.pt")
    changed = apply_overrides(saved, {"train.learning_rate": 1e-3, "train.num_epochs": 9})
    with pytest.raises(CheckpointError, match=r"different config \(train.learning_rate"):
        check_resume_config(saved, changed, path=tmp_path / "x.pt")


_WRITER = """
import sys, torch
from lungsrad.checkpoint_format import CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION
from lungsrad.training.checkpoint_files import save_atomic
path, start = sys.argv[1], int(sys.argv[2])
weight = torch.randn(8_000_000)  # 32 MB: most of the loop's time is spent inside the write
for epoch in range(start, start + 1000):
    save_atomic({"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_FORMAT_VERSION,
                 "config": "", "model": {"weight": weight}, "objective": {}, "optimizer": {},
                 "scheduler": {}, "epoch": epoch, "history": [],
                 "best": None}, path)
    print(epoch, flush=True)
"""

# How long the torn-write test tries to catch its writer inside a write before it fails (the
# writer spends most of its time inside one: the test catches it within a few tries).
CATCH_DEADLINE_S = 120.0


def _kill_inside_a_write(writer, is_inside_write) -> None:
    """Holds the writer (SIGSTOP) and SIGKILLs it once it is held inside a write, else lets it
    go on a moment and holds it again; fails, the writer killed, when the deadline passes or
    the writer ended first, instead of trying forever."""
    import signal
    import time

    deadline = time.monotonic() + CATCH_DEADLINE_S
    while time.monotonic() < deadline and writer.poll() is None:
        with Held(writer.pid):
            if is_inside_write():
                os.kill(writer.pid, signal.SIGKILL)
                return
        time.sleep(0.001)
    writer.kill()
    pytest.fail(
        f"the writer was not caught inside a write in {CATCH_DEADLINE_S:.0f} s "
        f"(exit status {writer.poll()})"
    )


@pytest.mark.slow
def test_a_process_killed_while_writing_never_leaves_a_torn_checkpoint(tmp_path):
    """SIGKILL a real writer inside a write (it is held with SIGSTOP and killed only while its
    partial temporary file exists) and at random moments: the checkpoint at the path is always
    the last complete one."""
    import random
    import signal
    import subprocess
    import sys
    import time

    path = epoch_folder(tmp_path, 1) / CHECKPOINT_FILE
    rng = random.Random(0)
    last = 0

    def partial_write() -> bool:
        return any(tmp.stat().st_size > 0 for tmp in path.parent.glob(".*.tmp"))

    for attempt in range(6):
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(last + 1)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        written = int(writer.stdout.readline())  # one complete write, then a kill
        inside_write = attempt % 2 == 0
        if inside_write:
            _kill_inside_a_write(writer, partial_write)
        else:
            time.sleep(rng.uniform(0.0, 0.4))
            os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
        written = max([written] + [int(line) for line in writer.stdout.read().split()])
        payload = read_resumable_checkpoint(path)  # never torn
        # The kill may land after the rename but before the print: then one more is complete.
        assert payload["epoch"] in (written, written + 1)
        last = payload["epoch"]
        if inside_write:
            assert partial_write(), "the held writer's partial file must be left"
        remove_stale_temporary_files(tmp_path)
        assert not list(path.parent.glob(".*.tmp"))
