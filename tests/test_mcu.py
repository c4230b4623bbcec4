"""``edgecifar bench --device mcu``: real int8 files in TensorFlow Lite Micro's own interpreter (tflite-micro),
and the table of devices it is registered in. Nothing is mocked: the files are converted here and run in
TFLite Micro, LiteRT and the bench's own processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecifar import micro, tflite_graph
from edgecifar.bench.devices import DEVICES, Device, MCUDevice, Option, open_device, register
from edgecifar.errors import EdgeCifarError

needs_micro = pytest.mark.skipif(not micro.installed(), reason=f"tflite-micro not installed ({micro.INSTALL})")
EDGECIFAR = str(Path(sys.executable).parent / "edgecifar")


def int8_file(model, path: Path) -> Path:
    """``model`` as the project's export writes full-integer files (export.tflite.write_int8)."""
    from edgecifar.export.calibration import full_range
    from edgecifar.export.job import ExportJob
    from edgecifar.export.tflite import write_int8
    from conftest import separable_images

    images, _ = separable_images(60, seed=3)
    write_int8(ExportJob(model, path.stem, full_range(images)), path)
    return path


@pytest.fixture(scope="module")
def relu_int8(trained_run, tmp_path_factory) -> Path:
    """The trained synthetic baseline (ReLU convnet) as a full-integer file, no manifest beside it."""
    import keras

    model = keras.saving.load_model(trained_run / "model.keras", compile=False)
    return int8_file(model, tmp_path_factory.mktemp("mcu") / "baseline_int8.tflite")


@pytest.fixture(scope="module")
def gelu_int8(tmp_path_factory) -> Path:
    """A small convnet with GELU and a product-reduction: two ops TFLite Micro has no kernel for."""
    import keras

    inp = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Conv2D(8, 3, activation="gelu")(x)
    x = keras.ops.prod(x, axis=[1, 2])
    out = keras.layers.Dense(10, activation="softmax")(x)
    return int8_file(keras.Model(inp, out), tmp_path_factory.mktemp("mcu") / "gelu_int8.tflite")


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """A file this project did not make: TensorFlow's converter called directly, float32 input and output
    around int8 ops, depthwise and pointwise convolutions, no manifest. Returns (path, keras model)."""
    import keras
    import tensorflow as tf

    from conftest import separable_images

    inp = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    x = keras.layers.Conv2D(12, 3, strides=2, activation="relu6")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(16, 1, activation="relu")(x)
    x = keras.layers.AveragePooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inp, out)
    images, _ = separable_images(50, seed=5)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([img[None].astype(np.float32)] for img in images)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    path = tmp_path_factory.mktemp("foreign") / "someone_elses_model.tflite"
    path.write_bytes(conv.convert())
    return path, model


@pytest.fixture(scope="module")
def crashes_tflm(tmp_path_factory) -> Path:
    """A valid int8 file whose softmax input scale is ~1e-9 (logits of pixels x 1e-9): LiteRT runs it,
    TFLite Micro aborts in the softmax's Prepare (QuantizeMultiplierGreaterThanOne, seen in gdb). Untrained
    MobileNetV2 heads (weights="none") do the same."""
    import keras

    inp = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1e-9)(inp))
    out = keras.layers.Dense(10, activation="softmax")(x)
    return int8_file(keras.Model(inp, out), tmp_path_factory.mktemp("mcu") / "degenerate_int8.tflite")


def bench_mcu(*args: str, data: Path) -> tuple[subprocess.CompletedProcess, dict | None]:
    """The ``edgecifar`` console script, as a user runs it; the JSON report when one was written."""
    out = Path(args[0]).with_suffix(".bench.json")
    proc = subprocess.run([EDGECIFAR, "bench", *args, "--device", "mcu", "--data", str(data), "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    return proc, (json.loads(out.read_text()) if out.exists() else None)


# --------------------------------------------------------------------------- the table of devices

def test_every_device_is_registered_by_scheme_with_what_it_runs_and_its_own_flags():
    assert set(DEVICES) == {"cpu", "ssh://", "android", "mcu"}
    flags = [o.flag for d in DEVICES.values() for o in d.options]
    assert len(flags) == len(set(flags))
    assert MCUDevice.suffixes == (".tflite",) and MCUDevice.precisions == ("int8", "int16x8") and not MCUDevice.threaded
    assert [o.flag for o in DEVICES["ssh://"].options] == ["--ssh-key", "--ssh-known-hosts", "--remote-python"]
    assert [o.flag for o in DEVICES["android"].options] == ["--benchmark-binary"]


def test_only_the_local_device_runs_files_with_this_installs_runtimes_and_has_this_machines_cpu_facts():
    assert [scheme for scheme, d in DEVICES.items() if d.host_runtimes] == ["cpu"]


def test_the_mcu_device_and_export_read_one_definition_of_what_a_microcontroller_runs():
    from edgecifar.export.formats import FORMATS
    from edgecifar.export.pipeline import runs_on_mcu

    assert MCUDevice.suffixes is micro.SUFFIXES and MCUDevice.precisions is micro.PRECISIONS
    assert [f.key for f in FORMATS if runs_on_mcu(f)] == ["int8", "int16x8"]


def test_mcu_rows_are_shown_as_mcu_rows_and_every_other_devices_as_bench_rows():
    from edgecifar.bench import mcu, report

    shown = report.view("mcu")
    assert (shown.table, shown.markdown) == (mcu.table, mcu.markdown) and shown.legend(200, 5, 1) == mcu.legend()
    assert all(report.view(scheme) is report.BENCH for scheme in DEVICES if scheme != "mcu")


def test_a_scheme_or_flag_registered_twice_is_refused():
    class Again(Device):
        scheme = usage = "mcu"

    class Clash(Device):
        scheme = usage = "other"
        options = (Option("--ssh-key", "key", "x"),)

    with pytest.raises(ValueError, match="registered twice"):
        register(Again)
    with pytest.raises(ValueError, match="registered twice"):
        register(Clash)


def test_an_option_of_another_device_is_a_one_line_error_naming_its_flag():
    with pytest.raises(EdgeCifarError, match=r"--ssh-key is for ssh://user@host\[:port\] devices, not cpu"):
        open_device("cpu", ssh_key="/k")
    with pytest.raises(EdgeCifarError, match=r"unknown device 'gpu': use cpu, ssh://user@host\[:port\], android\[:SERIAL\], mcu"):
        open_device("gpu")


# --------------------------------------------------------------------------- what TFLite Micro makes of files

@needs_micro
@pytest.mark.slow
def test_smallest_arena_allocates_and_one_byte_less_does_not(relu_int8):
    check = micro.check(relu_int8)
    data = relu_int8.read_bytes()
    assert check.runs and check.arena > micro.ARENA_FLOOR
    assert micro.allocates(data, check.arena)
    assert not micro.allocates(data, check.arena - 1)
    assert not micro.allocates(data, check.arena - 1024)
    # The interpreter's own record of what it used fits in the arena it was given.
    assert 0 < check.arena_recorded <= check.arena


@needs_micro
def test_unsupported_ops_are_all_named_not_only_the_first(gelu_int8):
    check = micro.check(gelu_int8)
    assert not check.runs and check.arena is None
    assert check.unsupported == ["GELU", "REDUCE_PROD"]
    assert check.summary() == "TFLite Micro lacks GELU (x1), REDUCE_PROD (x1)"


def test_macs_are_counted_from_the_flatbuffer_as_from_the_keras_model(foreign):
    from edgecifar.models.stats import count_macs

    path, model = foreign
    graph = tflite_graph.read(path)
    assert graph.macs == count_macs(model) > 0
    assert graph.full_integer and {"DEPTHWISE_CONV_2D", "QUANTIZE", "DEQUANTIZE"} <= set(graph.ops)


def test_macs_from_the_flatbuffer_match_the_zoo_manifest():
    """TTA files are left out: their batch of two or six views exists only at run time (the stored shapes say 1)."""
    from edgecifar import zoo
    from edgecifar.export.tta import TTA

    def tta(name: str) -> bool:
        return any(f"{kind.suffix}_" in name for kind in TTA.values())

    entries = [e for e in zoo.load_manifest()["files"] if e["file"].endswith(".tflite") and not tta(e["file"])]
    assert entries
    for e in entries:
        assert tflite_graph.read(zoo.ZOO_DIR / e["file"]).macs == e["macs"], e["file"]


def test_a_file_that_is_not_tflite_is_a_one_line_model_error(tmp_path):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(EdgeCifarError, match="x.tflite: not a TFLite flatbuffer"):
        tflite_graph.read(bad)


# --------------------------------------------------------------------------- edgecifar bench --device mcu

@needs_micro
@pytest.mark.slow
def test_bench_mcu_runs_a_relu_int8_file_with_arena_flash_accuracy_and_agreement_with_litert(
        relu_int8, synthetic_archive):
    proc, doc = bench_mcu(str(relu_int8), data=synthetic_archive)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = doc["rows"]
    assert row["status"] == "ok" and row["runtime"] == "tflite-micro" and row["device"] == "mcu"
    assert row["images"] == 100                        # the synthetic test set (mcu default: first 1,000)
    assert row["accuracy"] > 0.5                       # trained on separable synthetic images
    assert row["agreement"] >= 0.95                    # TFLite Micro's kernels against LiteRT's
    assert row["flash_bytes"] == row["bytes"] == relu_int8.stat().st_size
    assert row["arena_bytes"] == micro.check(relu_int8).arena
    assert row["macs"] == tflite_graph.read(relu_int8).macs
    assert row["latency_ms"] is None                   # no chip latency is claimed
    assert row["fits"] == micro.fits(row["arena_bytes"], row["bytes"]) and row["fits"]
    assert "TFLite Micro" in proc.stdout and "arena" in proc.stdout and "DS11451" in proc.stdout


@needs_micro
def test_bench_mcu_refuses_gelu_naming_the_ops_in_one_line(gelu_int8, synthetic_archive):
    proc, doc = bench_mcu(str(gelu_int8), data=synthetic_archive)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout
    (row,) = doc["rows"]
    assert row["status"] == "error"
    assert row["error"] == f"{gelu_int8}: uses GELU and REDUCE_PROD, which TensorFlow Lite Micro lacks"
    line = next(ln for ln in proc.stderr.splitlines() if "lacks" in ln)   # the progress line names them too
    assert gelu_int8.name in line and line.endswith("uses GELU and REDUCE_PROD, which TensorFlow Lite Micro lacks")


@needs_micro
def test_bench_mcu_runs_a_foreign_float_io_file_with_macs_from_its_flatbuffer(foreign, synthetic_archive):
    from edgecifar.models.stats import count_macs

    path, model = foreign
    proc, doc = bench_mcu(str(path), "--input-range", "0,255", data=synthetic_archive)   # it rescales inside
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = doc["rows"]
    assert row["status"] == "ok" and row["macs"] == count_macs(model)   # no manifest: read from the file
    assert row["agreement"] >= 0.95 and row["arena_bytes"] > 0


@needs_micro
@pytest.mark.slow
def test_bench_mcu_gives_float_and_onnx_files_an_error_row_and_one_row_per_file(bench_models, synthetic_archive):
    files = [str(bench_models / n) for n in ("tiny_int8.tflite", "tiny_fp32.tflite", "tiny_fp32.onnx")]
    proc, doc = bench_mcu(*files, "--threads", "1,2", data=synthetic_archive)
    assert proc.returncode == 1
    rows = {Path(r["file"]).name: r for r in doc["rows"]}
    assert len(doc["rows"]) == 3                       # TFLite Micro has one thread: --threads is moot
    assert rows["tiny_int8.tflite"]["status"] == "ok"
    assert rows["tiny_fp32.tflite"]["error"].endswith(
        "not full-integer: every op computes in float32, as in a float, fp16 or dynamic-range file")
    assert rows["tiny_fp32.onnx"]["error"].endswith("mcu devices run .tflite files only")


#: Why each shipped .tflite file that a microcontroller cannot run is refused, as the file itself shows.
ZOO_REFUSALS = {
    "edge_best_int8.tflite": "uses GELU, which TensorFlow Lite Micro lacks",
    "edge_fast_kd160_e60_int8.tflite": "uses GELU, which TensorFlow Lite Micro lacks",
    "edge_fast_kd160_e60_tta_int8.tflite": "uses GELU, which TensorFlow Lite Micro lacks, and stacks test-time-"
                                           "augmentation views in its batch at run time, where TensorFlow Lite "
                                           "Micro keeps the stored batch of 1",
    "mnv2_ft128_int8.tflite": "not full-integer: its stem computes in float32, as export --int8-float-ops keeps it",
    "mnv2_ft160_tta6_int8.tflite": "not full-integer: its stem computes in float32, as export --int8-float-ops "
                                   "keeps it, and stacks test-time-augmentation views in its batch at run time, "
                                   "where TensorFlow Lite Micro keeps the stored batch of 1",
    "mnv2_ft96_fp32.tflite": "not full-integer: every op computes in float32, as in a float, fp16 or dynamic-range "
                             "file",
    "edge_micro_kd_int8.tflite": None, "edge_nano_kd160_int8.tflite": None, "mnv2_ft96_int8.tflite": None,
}


@needs_micro
def test_the_mcu_names_the_true_reason_it_cannot_run_each_shipped_file():
    """int8 input and output but a float32 stem (mnv2), GELU, and a batch of views that exists only at run time
    (TTA): each said as it is, never "runs .tflite files only" about a .tflite file."""
    from edgecifar import zoo

    dev = open_device("mcu")
    files = {p.name: p for p in zoo.files() if p.suffix == ".tflite"}
    assert set(files) == set(ZOO_REFUSALS)
    for name, reason in ZOO_REFUSALS.items():
        assert dev.refusal(files[name]) == (f"{files[name]}: {reason}" if reason else None), name
    assert dev.refusal(zoo.ZOO_DIR / "edge_micro_kd_int8.onnx").endswith(": mcu devices run .tflite files only")


@needs_micro
def test_a_default_bench_on_the_mcu_skips_what_it_cannot_run_in_one_line_and_exits_0(synthetic_archive, tmp_path):
    proc = subprocess.run([EDGECIFAR, "bench", "--device", "mcu", "--limit", "20", "--data", str(synthetic_archive)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)   # cwd: no ./runs exports
    assert proc.returncode == 0, proc.stderr[-3000:]
    (skipped,) = [ln for ln in proc.stderr.splitlines() if "skipped" in ln]
    for name in [*(n for n, reason in ZOO_REFUSALS.items() if reason), "edge_micro_kd_int8.onnx"]:
        assert name in skipped
    assert "edge_micro_kd_int8.tflite" not in skipped and "edge_nano_kd160_int8.tflite" not in skipped
    for reason in {r for r in ZOO_REFUSALS.values() if r}:   # each file's own reason, grouped, not the first one's
        assert reason in skipped


@pytest.mark.slow
def test_where_a_file_computes_in_float_is_said_from_its_flatbuffer(bench_models):
    assert tflite_graph.read(bench_models / "tiny_int8.tflite").float_part() is None
    assert tflite_graph.read(bench_models / "tiny_fp32.tflite").float_part() == (
        "every op computes in float32, as in a float, fp16 or dynamic-range file")


def test_mcu_table_keeps_file_flash_arena_and_top1_whole_at_80_columns():
    """Rows as the mcu device returns them (one measured, one refused), rendered at 80 and 160 columns."""
    from rich.console import Console

    from edgecifar.bench import mcu
    from edgecifar.units import size

    nan = float("nan")
    rows = [{"file": "/x/a_rather_long_model_name_int8.tflite", "status": "ok", "bytes": 93_896,
             "flash_bytes": 93_896, "macs": 13_336_152, "arena_bytes": 46_408, "accuracy": 0.094, "ci_low": 0.077,
             "ci_high": 0.114, "images": 1000, "agreement": 0.957, "fits": [c.name for c in micro.CHIPS]},
            {"file": "/x/edge_tiny_int8.tflite", "status": "error", "bytes": 95_680, "flash_bytes": 95_680,
             "macs": 22_487_680, "arena_bytes": None, "accuracy": nan, "agreement": None, "fits": [],
             "error": "/x/edge_tiny_int8.tflite: TFLite Micro lacks GELU (x6)"}]
    for width in (80, 160):
        console = Console(width=width, record=True)
        console.print(mcu.table(rows, "mcu"))
        text = console.export_text()
        assert max(len(line) for line in text.splitlines()) <= width
        for whole in ("a_rather_long_model_name_int8.tflite", size(93_896), size(46_408), "9.4%"):
            assert whole in text, (width, whole)
        assert "edge_tiny_int8.tflite: TFLite Micro lacks GELU (x6)" in text
    assert "6 of 6" in text and "95.7%" in text          # at 160 columns the other columns join


@needs_micro
@pytest.mark.slow
def test_a_file_that_crashes_tflite_micro_is_an_error_row_and_the_next_file_still_runs(
        crashes_tflm, relu_int8, synthetic_archive):
    proc, doc = bench_mcu(str(crashes_tflm), str(relu_int8), data=synthetic_archive)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout
    crashed, ran = doc["rows"]
    assert crashed["error"] == f"{crashes_tflm}: TFLite Micro crashed (SIGABRT) preparing or running this file"
    assert ran["status"] == "ok"


# --------------------------------------------------------------------------- the registry, as a contract

#: Registered models that do not run in TFLite Micro, each with its reason (asserted where it is cheap).
EXCLUDED = {
    "edge_tiny": "GELU", "edge_fast": "GELU", "edge_best": "GELU",   # no TFLite Micro kernel for GELU
    # Built untrained (weights="none") their logits span ~1e-8 and TFLite Micro aborts in SOFTMAX's Prepare,
    # as crashes_tflm does; converting them takes ~25 s each, so they are not converted here.
    "mnv2_dense128": None, "mnv2_dropout": None,
}


def _registered():
    from edgecifar import models

    return models.names()


@needs_micro
@pytest.mark.slow
@pytest.mark.parametrize("name", _registered())
def test_every_registered_model_converts_to_int8_and_runs_in_tflite_micro_unless_excluded(name, tmp_path):
    from edgecifar import models

    if name in EXCLUDED and EXCLUDED[name] is None:
        pytest.skip("excluded without a cheap check: see EXCLUDED")
    path = int8_file(models.create(name), tmp_path / f"{name}_int8.tflite")
    check = open_device("mcu").check(path)
    figures = check.get("figures") or {}
    if name in EXCLUDED:
        assert figures["unsupported_ops"] == [EXCLUDED[name]], "an exclusion that no longer holds: remove it"
    else:
        assert check["status"] == "ok", check.get("error")
        assert figures["arena_bytes"] > 0 and figures["unsupported_ops"] == []


WITHOUT_TFLITE_MICRO = """
import sys
class Absent:  # what the import system sees where tflite-micro is not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tflite_micro":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Absent())
"""


@pytest.mark.slow
def test_without_tflite_micro_bench_says_which_extra_and_export_says_so_in_its_column(relu_int8, synthetic_archive):
    bench = WITHOUT_TFLITE_MICRO + (f"sys.argv = ['edgecifar', 'bench', {str(relu_int8)!r}, '--device', 'mcu', "
                                    f"'--data', {str(synthetic_archive)!r}]\n"
                                    "from edgecifar.cli import main\nmain()")
    proc = subprocess.run([sys.executable, "-c", bench], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ("error: --device mcu needs TFLite Micro "
                                                    "(pip install 'edgecifar[mcu]')")
    check = WITHOUT_TFLITE_MICRO + ("import json\nfrom edgecifar.export.validate import micro_check\n"
                                    f"print(json.dumps(micro_check({str(relu_int8)!r})))")
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    verdict = json.loads(proc.stdout.strip().splitlines()[-1])
    assert verdict["runs"] is None
    assert verdict["summary"] == "not checked: tflite-micro is not installed (pip install 'edgecifar[mcu]')"


@needs_micro
def test_a_file_that_allocates_but_whose_kernel_refuses_its_types_when_invoked_does_not_run(tmp_path):
    """TFLite Micro's RESIZE_BILINEAR checks its type only when invoked: a 16x8 file that resizes its input allocates
    an arena, and still cannot run. Allocating is not running; the check invokes once and says which node fails."""
    import keras
    import tensorflow as tf

    inp = keras.Input((8, 8, 3))
    x = keras.layers.Resizing(16, 16)(inp)
    x = keras.layers.Conv2D(4, 3)(x)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    converter.representative_dataset = lambda: ([rng.random((1, 8, 8, 3), np.float32)] for _ in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int16
    path = tmp_path / "resize_int16x8.tflite"
    path.write_bytes(converter.convert())
    checked = micro.check(path)
    assert checked.arena is not None and not checked.runs and checked.fits == []
    assert checked.summary() == ("TFLite Micro allocates it but cannot run it: RESIZE_BILINEAR (node 0) fails: "
                                 "Output type is int16, requires float or int8.")
