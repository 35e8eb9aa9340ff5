"""The curve type's levels, the CSV of the curves and the SS2D figure."""

from __future__ import annotations

import csv

import numpy as np

from lungsrad.analysis.spectral.curves import ResponseCurve
from lungsrad.analysis.spectral.dass import VARIANT_SCAN, VARIANT_SCANNED, VARIANT_SMOOTHED
from lungsrad.analysis.spectral.figures import plot_curves
from lungsrad.analysis.spectral.tables import curves_to_csv


def test_relative_db_is_zero_at_dc_and_floored():
    frequencies = np.fft.rfftfreq(8)
    curve = ResponseCurve(
        0, 0, "time", VARIANT_SCANNED, 8, frequencies, np.array([2, 1, 0.2, 0, 2.0])
    )
    np.testing.assert_allclose(curve.relative_db(), [0.0, -6.0206, -20.0, -40.0, 0.0], atol=1e-4)


def _curve(stage, block, axis, variant, n, scale=1.0):
    frequencies = np.fft.rfftfreq(n)
    return ResponseCurve(stage, block, axis, variant, n, frequencies, scale / (1 + frequencies))


def test_csv_and_png_outputs(tmp_path):
    curves = [
        _curve(0, 0, "time", VARIANT_SCAN, 8),
        _curve(0, 0, "freq", VARIANT_SCAN, 4),
        _curve(1, 0, "time", VARIANT_SCAN, 4),
        _curve(1, 0, "time", VARIANT_SMOOTHED, 4, 0.5),
        _curve(1, 0, "freq", VARIANT_SCAN, 2),
    ]
    rows = list(csv.DictReader(curves_to_csv(curves).splitlines()))
    assert len(rows) == 5 + 3 + 3 + 3 + 2
    assert rows[0] == {
        "stage": "0",
        "block": "0",
        "axis": "time",
        "variant": "scan",
        "num_cells": "8",
        "bin": "0",
        "cycles_per_cell": "0",
        "response": "1",
        "skip_gain": "nan",
    }
    path = tmp_path / "out" / "figure.png"
    plot_curves(curves, path, title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["figure.png"]  # no temporary left
