"""mamba-ssm counts as installed only when its compiled `selective_scan_cuda` imports, not when
`selective_scan_fn` alone does (newer mamba-ssm builds the extension only with
MAMBA_KEEP_CUDA_BUILD=TRUE). A stand-in `mamba_ssm` package on sys.path, in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]

PROBE = """
import torch  # the extension is imported after torch, as the backend does
from lungsrad.models.selective_scan.mamba_ssm import (
    is_mamba_ssm_installed,
    load_selective_scan_fn,
)
print("installed" if is_mamba_ssm_installed() else "missing")
try:
    load_selective_scan_fn()
except ImportError as error:
    print(error)
"""


def _fake_mamba_ssm(root: Path, *, with_extension: bool) -> Path:
    """A mamba_ssm whose selective_scan_fn imports (it only fails when called, like the real
    one without its extension), plus a selective_scan_cuda module when asked."""
    ops = root / "mamba_ssm" / "ops"
    ops.mkdir(parents=True)
    (root / "mamba_ssm" / "__init__.py").write_text("")
    (ops / "__init__.py").write_text("")
    (ops / "selective_scan_interface.py").write_text(
        "try:\n"
        "    import selective_scan_cuda\n"
        "except ImportError:\n"
        "    selective_scan_cuda = None\n\n\n"
        "def selective_scan_fn(*args, **kwargs):\n"
        "    return selective_scan_cuda.fwd(*args)\n"
    )
    if with_extension:
        (root / "selective_scan_cuda.py").write_text("def fwd(*args):\n    return None\n")
    return root


def _probe(site: Path) -> list[str]:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    completed = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    return completed.stdout.splitlines()


def test_selective_scan_fn_without_the_compiled_extension_is_not_installed(tmp_path):
    lines = _probe(_fake_mamba_ssm(tmp_path, with_extension=False))
    assert lines[0] == "missing"
    hint = lines[1]
    assert "selective_scan_cuda" in hint
    assert "MAMBA_FORCE_BUILD=TRUE" in hint and "MAMBA_KEEP_CUDA_BUILD=TRUE" in hint
    assert "nvcc matching torch.version.cuda" in hint and "minutes per GPU architecture" in hint


def test_the_compiled_extension_and_selective_scan_fn_make_it_installed(tmp_path):
    assert _probe(_fake_mamba_ssm(tmp_path, with_extension=True)) == ["installed"]
