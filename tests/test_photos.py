"""``edgecifar predict`` on the files people really have: every image mode Pillow reads gives the picture's
own pixels (or one line saying why not), phone photos are turned upright, tiny images are flagged,
folders are classified, scripts get JSON, and a zoo file is found by the name ``edgecifar zoo`` lists.
Every file here is a real file the test writes."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import separable_images
from edgecifar import zoo
from edgecifar.bench import predict as pred
from edgecifar.cli import main

EDGECIFAR = str(Path(sys.executable).with_name("edgecifar"))  # the console script of this venv


def write_png(path: Path, samples: np.ndarray, color_type: int) -> Path:
    """A PNG written byte by byte (Pillow cannot write 16-bit colour): ``samples`` uint8 or uint16,
    ``color_type`` 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA."""
    depth = 16 if samples.dtype == np.uint16 else 8
    rows = samples.reshape(samples.shape[0], -1).astype(">u2" if depth == 16 else "u1")
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", samples.shape[1], samples.shape[0], depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


def picture(seed: int = 11, scale: int = 2) -> np.ndarray:
    """A 32x32 picture of one class, upscaled ``scale`` times (BOX gives the 32x32 back exactly)."""
    x, _ = separable_images(1, seed=seed)
    return np.kron(x[0], np.ones((scale, scale, 1), np.uint8))


def predict_json(*args: str) -> tuple[int, dict | None, str]:
    proc = subprocess.run([EDGECIFAR, "predict", "--json", *args], capture_output=True, text=True, timeout=120)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None, proc.stderr


# --------------------------------------------------------------------------- modes

def test_a_16_bit_greyscale_png_keeps_its_grey_levels(tmp_path):
    grey8 = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 256
    path = tmp_path / "grey16.png"
    Image.fromarray((grey8 * 257).astype(np.uint16)).save(path)        # Pillow writes mode I;16
    assert Image.open(path).mode == "I;16"
    expected = np.asarray(Image.fromarray(grey8.astype(np.uint8)).resize((32, 32), Image.Resampling.BOX))
    pixels = pred.load_image(path)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], expected)


def test_16_bit_pgm_tiff_and_png_files_of_every_layout_keep_their_levels(tmp_path):
    level = 100 * 257                                                # 8-bit level 100 in 16 bits
    grey = np.full((40, 40), level, np.uint16)
    pgm = tmp_path / "grey16.pgm"
    pgm.write_bytes(b"P5 40 40 65535\n" + grey.astype(">u2").tobytes())   # Pillow opens it as mode I
    tiff = tmp_path / "grey16.tif"
    Image.fromarray(grey).save(tiff)
    rgb = write_png(tmp_path / "rgb16.png", np.stack([grey, grey // 2, grey // 4], -1), 2)
    grey_alpha = write_png(tmp_path / "la16.png", np.stack([grey, np.full_like(grey, 65535)], -1), 4)
    for path in (pgm, tiff, grey_alpha):
        assert np.all(pred.load_image(path) == 100), path
    assert pred.load_image(rgb)[0, 0].tolist() == [100, 50, 25]


def test_a_16_bit_greyscale_png_is_classified_like_its_8_bit_copy(bench_models, tmp_path):
    x = picture(seed=5)
    grey8 = np.asarray(Image.fromarray(x).convert("L"))
    Image.fromarray(grey8).save(tmp_path / "grey8.png")
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    code, doc, stderr = predict_json(str(tmp_path / "grey8.png"), str(tmp_path / "grey16.png"),
                                     "--model", str(bench_models / "tiny_int8.tflite"))
    assert code == 0, stderr
    eight, sixteen = doc["images"]
    assert sixteen["class"] == eight["class"] and sixteen["probability"] == pytest.approx(eight["probability"])


def test_transparent_pixels_are_shown_over_white_in_every_mode_with_alpha(tmp_path):
    hidden = np.zeros((32, 32, 4), np.uint8)
    hidden[..., 0] = 200                                             # red under alpha 0 (left) and 128 (right)
    hidden[:, 16:, 3] = 128
    Image.fromarray(hidden, "RGBA").save(tmp_path / "rgba.png")
    la = np.zeros((32, 32, 2), np.uint8)                             # black under alpha 0
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    palette = Image.new("P", (32, 32), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.save(tmp_path / "palette.png", transparency=0)           # black, marked transparent
    rgba = pred.load_image(tmp_path / "rgba.png")
    assert rgba[:, :16].tolist() == [[[255, 255, 255]] * 16] * 32
    assert np.abs(rgba[:, 16:].astype(int) - [227, 127, 127]).max() <= 1     # half red, half white
    assert np.all(pred.load_image(tmp_path / "la.png") == 255)
    assert np.all(pred.load_image(tmp_path / "palette.png") == 255)


def test_cmyk_jpeg_greyscale_bilevel_and_palette_images_keep_their_colours(tmp_path):
    x = picture(seed=3, scale=4)
    Image.fromarray(x).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    assert np.abs(pred.load_image(tmp_path / "cmyk.jpg").astype(int) - picture(3, 1)).mean() < 6
    Image.fromarray(np.full((40, 40), 77, np.uint8)).save(tmp_path / "grey.png")
    Image.fromarray(np.full((40, 40), 255, np.uint8)).convert("1").save(tmp_path / "bilevel.png")
    Image.fromarray(np.full((50, 70, 3), 120, np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE).save(
        tmp_path / "palette.gif")
    assert np.all(pred.load_image(tmp_path / "grey.png") == 77)
    assert np.all(pred.load_image(tmp_path / "bilevel.png") == 255)
    assert np.all(pred.load_image(tmp_path / "palette.gif") == 120)


def test_pixels_without_a_white_level_are_refused_in_one_line(bench_models, tmp_path):
    Image.fromarray(np.full((40, 40), 70_000, np.int32)).save(tmp_path / "int32.tif")
    Image.fromarray(np.full((40, 40), 0.5, np.float32)).save(tmp_path / "float.tif")
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "int32.tif"), str(tmp_path / "float.tif"),
                                       "--model", str(bench_models / "tiny_int8.tflite")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (f"error: {tmp_path / 'int32.tif'}: 32-bit integer pixels have no standard white level; save it with "
            "8 or 16 bits per channel") in result.stderr.splitlines()
    assert f"error: {tmp_path / 'float.tif'}: floating-point pixels have no standard white level" in result.stderr


# --------------------------------------------------------------------------- orientation and size

def test_exif_orientation_6_is_turned_upright(tmp_path):
    upright = picture(seed=7, scale=3)
    exif = Image.Exif()
    exif[0x0112] = 6                                 # "rotate 90 degrees clockwise to display"
    stored = Image.fromarray(np.rot90(upright, 1))   # a phone stores the picture turned 90 degrees anticlockwise
    stored.save(tmp_path / "phone.png", exif=exif)
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    np.testing.assert_array_equal(pred.load_image(tmp_path / "phone.png"), picture(7, 1))
    jpeg = pred.load_image(tmp_path / "phone.jpg").astype(int)
    assert np.abs(jpeg - picture(7, 1)).mean() < 6
    assert np.abs(jpeg - np.rot90(picture(7, 1), 1)).mean() > 20     # not the stored, sideways picture


def test_an_image_smaller_than_32x32_is_classified_with_a_warning(bench_models, tmp_path):
    Image.new("RGB", (1, 1), (200, 30, 60)).save(tmp_path / "dot.png")
    warnings = []
    assert np.all(pred.load_image(tmp_path / "dot.png", warn=warnings.append) == [200, 30, 60])
    assert warnings == [f"{tmp_path / 'dot.png'}: 1x1 pixels, smaller than 32x32: upscaled, so its class says little"]
    code, doc, stderr = predict_json(str(tmp_path / "dot.png"), "--model", str(bench_models / "tiny_int8.tflite"))
    assert code == 0
    assert f"warning: {warnings[0]}" in stderr.splitlines()
    assert doc["images"][0]["warnings"] == warnings and doc["images"][0]["class"]


# --------------------------------------------------------------------------- arguments and output

def test_a_folder_is_classified_image_by_image_and_one_without_images_is_an_error_line(bench_models, tmp_path):
    photos, empty = tmp_path / "photos", tmp_path / "empty"
    photos.mkdir()
    empty.mkdir()
    for i, name in enumerate(("b.png", "a.jpg")):
        Image.fromarray(picture(seed=i)).save(photos / name)
    (photos / "notes.txt").write_text("not an image")
    (empty / "notes.txt").write_text("not an image")
    result = CliRunner().invoke(main, ["predict", str(photos), str(empty),
                                       "--model", str(bench_models / "tiny_int8.tflite")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(photos / "a.jpg"), str(photos / "b.png")]
    assert f"error: {empty}: a folder without image files" in result.stderr.splitlines()
    assert "1 of 3 images could not be read" in result.stderr


def test_predict_json_is_one_document_with_class_probability_top_classes_and_errors(bench_models, tmp_path):
    Image.fromarray(picture(seed=2)).save(tmp_path / "one.png")
    code, doc, stderr = predict_json(str(tmp_path / "one.png"), str(tmp_path / "missing.png"),
                                     "--model", str(bench_models / "tiny_int8.tflite"), "--top", "2")
    assert code == 1 and "Traceback" not in stderr
    assert doc["model"] == str(bench_models / "tiny_int8.tflite") and doc["runtime"] == "litert"
    ok, missing = doc["images"]
    assert ok["file"] == str(tmp_path / "one.png") and ok["class"] == ok["top"][0]["class"]
    assert [t["probability"] for t in ok["top"]] == sorted((t["probability"] for t in ok["top"]), reverse=True)
    assert len(ok["top"]) == 2 and 0 < ok["probability"] <= 1 and ok["warnings"] == []
    assert missing == {"file": str(tmp_path / "missing.png"), "error": f"{tmp_path / 'missing.png'}: no such file"}


def test_a_zoo_file_name_resolves_to_the_shipped_file(tmp_path):
    shipped = [e["file"] for e in zoo.load_manifest().get("files", []) if e["file"].endswith(".tflite")]
    if not shipped:
        pytest.skip("no models shipped yet")
    Image.fromarray(picture(seed=1)).save(tmp_path / "one.png")
    proc = subprocess.run([EDGECIFAR, "predict", "one.png", "--model", shipped[0]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"model: {zoo.ZOO_DIR / shipped[0]} (litert)" in proc.stderr
