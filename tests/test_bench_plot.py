"""bench.plot: a whole study in one accuracy-latency plot stays readable."""

from __future__ import annotations

from edgecifar.bench.plot import LABEL_ALL, at_chance, family, pareto_plot


def _row(file, accuracy, latency, precision="int8", half_width=0.03):
    return {"file": file, "precision": precision, "threads": 1, "status": "ok", "accuracy": accuracy,
            "ci_low": accuracy - half_width, "ci_high": accuracy + half_width, "latency_ms": latency}


def test_a_family_is_the_model_whatever_its_precision_or_seed():
    names = {family(_row(f, 0.5, 1.0)) for f in ("runs/ladder/l2-seed0/export/l2_int8.tflite",
                                                   "runs/ladder/l2-seed2/export/l2_fp32.tflite", "zoo/l2_int8.onnx")}
    assert names == {"l2"}
    assert family(_row("zoo/edge_tiny_tta_int8.tflite", 0.5, 1.0)) == "edge_tiny_tta"


def test_a_file_at_chance_counts_as_a_timing_reference_only():
    assert at_chance(_row("random_int8.tflite", 0.103, 0.7, half_width=0.02))
    assert not at_chance(_row("trained_int8.tflite", 0.69, 0.1))


def test_a_crowded_study_with_a_timing_reference_plots(tmp_path):
    rows = [_row(f"runs/r{i % 5}-seed{i}/export/r{i % 5}_{p}.tflite", 0.6 + 0.01 * i, 0.1 + 0.05 * i, p)
            for i in range(LABEL_ALL + 4) for p in ("int8", "fp32")]
    rows.append(_row("reference/mnv2_random_int8.tflite", 0.1, 0.7, half_width=0.02))
    out = pareto_plot(rows, tmp_path / "p.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
