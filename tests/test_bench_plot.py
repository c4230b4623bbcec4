"""bench.plot: a whole study in one accuracy-latency plot stays readable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from edgecifar.bench.plot import LABEL_ALL, at_chance, family, labels, pareto_plot, plotted


def _row(file, accuracy, latency, precision="int8", half_width=0.03):
    return {"file": file, "precision": precision, "threads": 1, "status": "ok", "accuracy": accuracy,
            "ci_low": accuracy - half_width, "ci_high": accuracy + half_width, "latency_ms": latency}


def test_a_family_is_the_model_whatever_its_precision_or_seed():
    names = {family(_row(f, 0.5, 1.0)) for f in ("runs/ladder/l2-seed0/export/l2_int8.tflite",
                                                   "runs/ladder/l2-seed2/export/l2_fp32.tflite", "zoo/l2_int8.onnx")}
    assert names == {"l2"}
    assert family(_row("zoo/edge_tiny_tta_int8.tflite", 0.5, 1.0)) == "edge_tiny_tta"
    assert {family(_row(f, 0.5, 1.0)) for f in ("m_mixed_int8.tflite", "m_int16x8.tflite", "m_fp32.tflite")} == {"m"}


def test_a_file_at_chance_counts_as_a_timing_reference_only():
    assert at_chance(_row("random_int8.tflite", 0.103, 0.7, half_width=0.02))
    assert not at_chance(_row("trained_int8.tflite", 0.69, 0.1))


def _study() -> tuple[list[dict], dict]:
    """A crowded study (past LABEL_ALL points, five families, two precisions) and its untrained timing reference."""
    rows = [_row(f"runs/r{i % 5}-seed{i}/export/r{i % 5}_{p}.tflite", 0.6 + 0.01 * i, 0.1 + 0.05 * i, p)
            for i in range(LABEL_ALL + 4) for p in ("int8", "fp32")]
    return rows, _row("reference/mnv2_random_int8.tflite", 0.1, 0.7, half_width=0.02)


def _rgb(png: Path) -> np.ndarray:
    """The decoded pixels (height, width, 3) of a PNG, as Pillow reads it."""
    with Image.open(png) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"), np.int16)


def _coloured_pixels(png: Path) -> int:
    """Pixels whose channels differ (data ink): axes, text, grid and the reference line are black or grey."""
    rgb = _rgb(png)
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 60).sum())


def test_each_measured_row_is_one_point_and_a_file_at_chance_is_a_timing_line_not_a_point():
    rows, reference = _study()
    failed = {"file": "broken_int8.tflite", "status": "error", "error": "not a loadable TFLite model"}
    unmeasured = _row("mcu_int8.tflite", 0.7, None)     # a device that times nothing: no latency to place
    references, points = plotted([*rows, reference, failed, unmeasured])
    assert references == [reference]
    assert points == rows


def test_a_crowded_study_plots_its_points_in_colour_and_a_plot_without_points_has_no_colour(tmp_path):
    rows, reference = _study()
    study = pareto_plot([*rows, reference], tmp_path / "study.png")
    pixels = _rgb(study)
    assert pixels.shape == (780, 1200, 3)                 # 10 x 6.5 inches at 120 dpi: the crowded layout
    assert pixels.min() < 100 < 200 < pixels.max()        # not blank, not one colour
    assert _coloured_pixels(study) > 2000                  # the points, their error bars and the Pareto front
    assert _coloured_pixels(pareto_plot([reference], tmp_path / "none.png")) == 0   # axes, text, a grey line


def test_points_of_files_sharing_a_name_are_labelled_as_the_table_names_them_with_their_folders():
    rows = [{"file": "/r/zoo/m_int8.tflite", "threads": 1}, {"file": "/r/floatstem/m_int8.tflite", "threads": 1},
            {"file": "/r/zoo/other_int8.tflite", "threads": 2}]
    assert labels(rows, multi_threads=False) == ["zoo/m_int8.tflite", "floatstem/m_int8.tflite", "other_int8.tflite"]
    assert labels(rows, multi_threads=True)[2] == "other_int8.tflite (2t)"
