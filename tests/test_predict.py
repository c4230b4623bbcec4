"""``edgecifar predict``: photos of any size -> 32x32 (center square, BOX downscale) -> LiteRT, no TensorFlow."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import fresh_python, separable_images
from edgecifar import LABELS, images
from edgecifar.bench import predict as pred
from edgecifar.cli import main


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Test images as files: big, non-square, RGBA, greyscale, JPEG; with the 32x32 image and class each shows."""
    d = tmp_path_factory.mktemp("photos")
    x, y = separable_images(6, seed=11)
    out = []
    # 3x nearest upscale (96x96), then 16 px of black on each side: 96x128, a landscape photo.
    for i in range(3):
        big = np.kron(x[i], np.ones((3, 3, 1), np.uint8))
        wide = np.zeros((96, 128, 3), np.uint8)
        wide[:, 16:112] = big
        path = d / f"wide_{i}.png"
        Image.fromarray(wide).save(path)
        out.append((path, x[i], int(y[i])))
    rgba = d / "rgba.png"
    Image.fromarray(np.kron(x[3], np.ones((2, 2, 1), np.uint8))).convert("RGBA").save(rgba)
    out.append((rgba, x[3], int(y[3])))
    jpeg = d / "photo.jpg"
    Image.fromarray(np.kron(x[4], np.ones((4, 4, 1), np.uint8))).save(jpeg, quality=95)
    out.append((jpeg, x[4], int(y[4])))
    return out


def test_images_are_center_cropped_and_box_downscaled_to_32x32(photos):
    for path, original, _ in photos[:4]:          # lossless files: BOX undoes a k x k upscale exactly
        pixels = images.load_image(path)
        assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
        np.testing.assert_array_equal(pixels, original)
    jpeg = images.load_image(photos[4][0])
    assert np.abs(jpeg.astype(int) - photos[4][1].astype(int)).mean() < 6   # JPEG is lossy, BOX averages it out


def test_box_downscale_averages_the_pixels_it_covers(tmp_path):
    img = np.zeros((64, 64, 3), np.uint8)
    img[::2, ::2] = 200                              # one bright pixel in every 2x2 cell
    path = tmp_path / "checker.png"
    Image.fromarray(img).save(path)
    assert np.all(images.load_image(path) == 50)       # area average, not a sample of one pixel


def test_greyscale_and_palette_images_become_rgb(tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((40, 40), 77, np.uint8), mode="L").save(grey)
    pal = tmp_path / "pal.gif"
    Image.fromarray(np.full((50, 70, 3), 120, np.uint8)).convert("P").save(pal)
    assert np.all(images.load_image(grey) == 77)
    assert images.load_image(pal).shape == (32, 32, 3)


@pytest.mark.slow
def test_predict_prints_class_probability_and_top3_per_image(photos, bench_models):
    paths = [str(p) for p, _, _ in photos]
    result = CliRunner().invoke(main, ["predict", *paths, "--model", str(bench_models / "tiny_int8.tflite")])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    assert len(lines) == len(photos)
    right = 0
    for line, (path, _, label) in zip(lines, photos):
        assert line.startswith(f"{path}: ")
        best = line.split(": ", 1)[1].split(" (")[0]
        assert best in LABELS
        assert line.count("%") == 4                  # the class's probability and three in the top 3
        right += best == LABELS[label]
    assert right >= 4                                # a model trained on these separable images


@pytest.mark.slow
def test_unreadable_images_are_reported_and_the_others_still_classified(photos, bench_models, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(np.random.default_rng(1).bytes(500))
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(photos[4][0].read_bytes()[:200])
    result = CliRunner().invoke(main, ["predict", str(junk), str(photos[0][0]), str(tmp_path / "none.png"),
                                       str(truncated), "--model", str(bench_models / "tiny_int8.tflite")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"error: {junk}: not a readable image (no image format Pillow knows)" in result.stderr
    assert f"error: {tmp_path / 'none.png'}: no such file" in result.stderr
    assert f"error: {truncated}: not a readable image" in result.stderr
    assert result.stdout.count(f"{photos[0][0]}: ") == 1
    assert "3 of 4 images could not be read" in result.stderr


def test_predict_without_a_model_and_an_empty_zoo_says_to_pass_model(photos, monkeypatch, tmp_path):
    monkeypatch.setattr("edgecifar.zoo.ZOO_DIR", tmp_path)
    result = CliRunner().invoke(main, ["predict", str(photos[0][0])])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: no shipped model yet (the zoo is empty): pass --model FILE.tflite"


@pytest.mark.slow
def test_default_model_is_the_zoos_most_accurate_int8_tflite(tmp_path, monkeypatch, bench_models):
    for name in ("a_int8.tflite", "b_int8.tflite", "c_fp32.tflite", "d_int8.onnx"):
        (tmp_path / name).write_bytes((bench_models / "tiny_int8.tflite").read_bytes())
    entries = [("a_int8.tflite", "tflite", "int8", 0.80), ("b_int8.tflite", "tflite", "int8", 0.86),
               ("c_fp32.tflite", "tflite", "fp32", 0.95), ("d_int8.onnx", "onnx", "int8", 0.99)]
    (tmp_path / "edgecifar.json").write_text(json.dumps({"files": [
        {"file": f, "format": fmt, "precision": p, "validation": {"accuracy": a}} for f, fmt, p, a in entries]}))
    monkeypatch.setattr("edgecifar.zoo.ZOO_DIR", tmp_path)
    assert pred.default_model() == tmp_path / "b_int8.tflite"


@pytest.mark.slow
def test_predict_rejects_onnx_and_wrong_input_models_in_one_line(photos, bench_models):
    for model, message in (("tiny_fp32.onnx", "predict runs .tflite files with LiteRT"),
                           ("wrong_shape.tflite", "4 input channels: a classifier of photos takes 1 (grey) or 3 (RGB)")):
        result = CliRunner().invoke(main, ["predict", str(photos[0][0]), "--model", str(bench_models / model)])
        assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


@pytest.mark.slow
def test_predict_never_imports_tensorflow(photos, bench_models):
    code = ("import sys\n"
            "from click.testing import CliRunner\n"
            "from edgecifar.cli import main\n"
            f"r = CliRunner().invoke(main, ['predict', {str(photos[0][0])!r}, '--model', "
            f"{str(bench_models / 'tiny_int8.tflite')!r}])\n"
            "assert r.exit_code == 0, r.output\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'onnxruntime') if m in sys.modules))")
    assert fresh_python(code) == "[]"


def test_top_k_orders_by_probability():
    probs = np.array([0.05, 0.5, 0.1, 0.3, 0.05, 0, 0, 0, 0, 0], np.float32)
    assert pred.top_k(probs, 3) == [("automobile", 0.5), ("cat", pytest.approx(0.3)), ("bird", pytest.approx(0.1))]


#: What the base install brings (setup.cfg install_requires and their dependencies): no TensorFlow,
#: no Keras, no onnxruntime.
BASE_PACKAGES = ("numpy", "numpy.libs", "click", "PIL", "pillow.libs", "rich", "markdown_it", "mdurl", "pygments",
                 "ai_edge_litert", "backports", "flatbuffers", "tqdm", "typing_extensions.py", "google", "ml_dtypes")


def base_only_site(tmp_path: Path) -> dict:
    """The environment of a device with only the base install: a site folder holding the base packages
    (links into this venv) and edgecifar laid out as the wheel installs it. Run Python with -S in it,
    so the full venv (TensorFlow, onnxruntime...) is invisible."""
    import edgecifar
    import numpy

    site_packages = Path(numpy.__file__).parents[1]
    root = Path(edgecifar.__file__).parents[1]
    site = tmp_path / "base-site"
    (site / "edgecifar").mkdir(parents=True)
    for name in BASE_PACKAGES:
        if (site_packages / name).exists():
            (site / name).symlink_to(site_packages / name)
    for item in (root / "edgecifar").iterdir():
        if item.name != "__pycache__":
            (site / "edgecifar" / item.name).symlink_to(item)
    for stage in ("train", "export", "bench"):
        (site / "edgecifar" / stage).symlink_to(root / stage)
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"}
    probe = subprocess.run([sys.executable, "-S", "-c", "import tensorflow"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "No module named 'tensorflow'" in probe.stderr
    return env


@pytest.mark.slow
def test_predict_runs_where_only_the_base_install_is_present(photos, bench_models, tmp_path):
    env = base_only_site(tmp_path)
    proc = subprocess.run([sys.executable, "-S", "-m", "edgecifar", "predict", str(photos[0][0]),
                           "--model", str(bench_models / "tiny_int8.tflite")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{photos[0][0]}: ") and "top 3:" in proc.stdout


# --------------------------------------------------------------------------- models that fail or crash LiteRT

EDGECIFAR = str(Path(sys.executable).with_name("edgecifar"))  # the console script of this venv


def _tflite_of(fn) -> bytes:
    """A float32 [1, 32, 32, 3] -> [1, 10] TFLite file computing ``fn`` (converted with TensorFlow)."""
    import tensorflow as tf

    func = tf.function(fn, input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32)])
    return tf.lite.TFLiteConverter.from_concrete_functions([func.get_concrete_function()], func).convert()


def _crashes_on_red_255(x):
    """INT32_MIN mod (red of the first pixel - 256): on a red of 255 that is INT32_MIN mod -1, which traps
    (SIGFPE) in the x86 division instruction of TFLite's FLOOR_MOD; any other red is harmless."""
    import tensorflow as tf

    divisor = tf.cast(x[0, 0, 0, 0], tf.int32) - 256
    rest = tf.math.floormod(tf.constant(-2**31, tf.int32) + 0 * tf.cast(x[0, 0, 0, 1], tf.int32), divisor)
    return tf.nn.softmax(tf.cast(tf.fill([1, 10], rest), tf.float32))


def _fails_unless_red_0(x):
    """GATHER at index 1000 x (red of the first pixel) from 10 values: LiteRT's invoke raises "gather index out
    of bounds" for any red above 0."""
    import tensorflow as tf

    index = tf.cast(x[0, 0, 0, 0], tf.int32) * 1000
    return tf.nn.softmax(tf.reshape(tf.gather(tf.range(10, dtype=tf.float32), index) + tf.zeros([1, 10]), [1, 10]))


@pytest.fixture(scope="module")
def hostile_models(tmp_path_factory) -> Path:
    from test_fuzz import TFLITE, edited_tflite, empty_quant_scales, operator_input_out_of_range

    out = tmp_path_factory.mktemp("hostile-models")
    (out / "crashes_on_red_255.tflite").write_bytes(_tflite_of(_crashes_on_red_255))
    (out / "fails_unless_red_0.tflite").write_bytes(_tflite_of(_fails_unless_red_0))
    (out / "aborts_when_loaded.tflite").write_bytes(edited_tflite(TFLITE.read_bytes(), empty_quant_scales))
    (out / "cannot_prepare.tflite").write_bytes(edited_tflite(TFLITE.read_bytes(), operator_input_out_of_range))
    return out


@pytest.fixture(scope="module")
def red_images(tmp_path_factory) -> dict[int, Path]:
    """32x32 black PNGs (they pass preprocessing unchanged) whose first pixel has red 0, 7 or 255."""
    out = tmp_path_factory.mktemp("red")
    paths = {}
    for red in (0, 7, 255):
        pixels = np.zeros((32, 32, 3), np.uint8)
        pixels[0, 0, 0] = red
        paths[red] = out / f"red_{red}.png"
        Image.fromarray(pixels).save(paths[red])
    return paths


def _predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EDGECIFAR, "predict", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386"),
                    reason="the crash is the x86 division instruction's trap on INT32_MIN / -1")
def test_a_model_that_crashes_litert_on_one_image_costs_that_image_only_and_the_json_still_prints(
        hostile_models, red_images):
    model = hostile_models / "crashes_on_red_255.tflite"
    images = [str(red_images[0]), str(red_images[255]), str(red_images[7])]
    proc = _predict(*images, "--model", str(model), "--json", "--input-range", "0,255")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    first, crashed, after = json.loads(proc.stdout)["images"]
    assert first["class"] and after["class"]                     # the image after the crash ran in a new worker
    assert crashed == {"file": images[1], "error": f"{images[1]}: not classified: {model}: LiteRT crashed (SIGFPE) "
                                                   "on this image; the other images run in a new process"}
    assert [line for line in proc.stderr.splitlines() if line.startswith("error: ")] == [f"error: {crashed['error']}"]
    text = _predict(*images, "--model", str(model), "--input-range", "0,255")
    assert text.returncode == 1
    assert [line.split(": ")[0] for line in text.stdout.splitlines()] == [images[0], images[2]]
    assert text.stderr.splitlines()[-1] == "1 of 3 images could not be classified"


def test_a_runtime_error_on_one_image_is_one_line_naming_the_model_and_the_others_are_classified(
        hostile_models, red_images):
    model = hostile_models / "fails_unless_red_0.tflite"
    proc = _predict(str(red_images[7]), str(red_images[0]), "--model", str(model), "--input-range", "0,255")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.startswith(f"{red_images[0]}: ") and len(proc.stdout.splitlines()) == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: {red_images[7]}: not classified: {model}: LiteRT cannot run this model (gather index out of bounds")


def test_a_model_that_crashes_litert_while_loading_fails_once_in_one_line(hostile_models, red_images):
    model = hostile_models / "aborts_when_loaded.tflite"
    proc = _predict(str(red_images[0]), str(red_images[7]), "--model", str(model), "--json")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"error: {model}: the TFLite runtime crashed (SIGABRT) loading it"]


def test_a_model_that_cannot_be_prepared_is_refused_once_in_one_line(hostile_models, red_images):
    model = hostile_models / "cannot_prepare.tflite"
    proc = _predict(str(red_images[0]), str(red_images[7]), "--model", str(model))
    assert proc.returncode == 2 and proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"error: {model}: LiteRT cannot prepare this model (Invalid tensor index 9999 in node")


@pytest.mark.slow
def test_a_model_whose_name_starts_with_a_dash_is_a_file_to_the_worker_not_an_option(photos, bench_models, tmp_path,
                                                                                      monkeypatch):
    (tmp_path / "-h_int8.tflite").write_bytes((bench_models / "tiny_int8.tflite").read_bytes())
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["predict", str(photos[0][0]), "--model", "-h_int8.tflite"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{photos[0][0]}: ")


def test_a_folder_argument_takes_the_images_of_its_class_subfolders_in_order_and_skips_hidden_ones(tmp_path):
    from edgecifar.bench.predict import expand_images

    for name in ("dog/b.png", "cat/a.png", "cat/.hidden.png", ".cache/c.png", "notes.txt", "top.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "cat" / "loop").symlink_to(tmp_path)           # a link back up is not followed
    found = [p.relative_to(tmp_path).as_posix() for p in expand_images([str(tmp_path)])]
    assert found == ["top.jpg", "cat/a.png", "dog/b.png"]
