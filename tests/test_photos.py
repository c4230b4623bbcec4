"""``edgecifar predict`` on the files people really have: every image mode Pillow reads gives the picture's
own pixels (or one line saying why not), phone photos are turned upright, tiny images are flagged,
folders are classified, scripts get JSON, and a zoo file is found by the name ``edgecifar zoo`` lists.
Every file here is a real file the test writes."""

from __future__ import annotations

import json
import os
import re
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
from edgecifar import images, zoo
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
    pixels = images.load_image(path)
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
        assert np.all(images.load_image(path) == 100), path
    assert images.load_image(rgb)[0, 0].tolist() == [100, 50, 25]


@pytest.mark.slow
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
    rgba = images.load_image(tmp_path / "rgba.png")
    assert rgba[:, :16].tolist() == [[[255, 255, 255]] * 16] * 32
    assert np.abs(rgba[:, 16:].astype(int) - [227, 127, 127]).max() <= 1     # half red, half white
    assert np.all(images.load_image(tmp_path / "la.png") == 255)
    assert np.all(images.load_image(tmp_path / "palette.png") == 255)


def test_cmyk_jpeg_greyscale_bilevel_and_palette_images_keep_their_colours(tmp_path):
    x = picture(seed=3, scale=4)
    Image.fromarray(x).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    assert np.abs(images.load_image(tmp_path / "cmyk.jpg").astype(int) - picture(3, 1)).mean() < 6
    Image.fromarray(np.full((40, 40), 77, np.uint8)).save(tmp_path / "grey.png")
    Image.fromarray(np.full((40, 40), 255, np.uint8)).convert("1").save(tmp_path / "bilevel.png")
    Image.fromarray(np.full((50, 70, 3), 120, np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE).save(
        tmp_path / "palette.gif")
    assert np.all(images.load_image(tmp_path / "grey.png") == 77)
    assert np.all(images.load_image(tmp_path / "bilevel.png") == 255)
    assert np.all(images.load_image(tmp_path / "palette.gif") == 120)


@pytest.mark.slow
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
    np.testing.assert_array_equal(images.load_image(tmp_path / "phone.png"), picture(7, 1))
    jpeg = images.load_image(tmp_path / "phone.jpg").astype(int)
    assert np.abs(jpeg - picture(7, 1)).mean() < 6
    assert np.abs(jpeg - np.rot90(picture(7, 1), 1)).mean() > 20     # not the stored, sideways picture


@pytest.mark.slow
def test_an_image_smaller_than_32x32_is_classified_with_a_warning(bench_models, tmp_path):
    Image.new("RGB", (1, 1), (200, 30, 60)).save(tmp_path / "dot.png")
    warnings = []
    assert np.all(images.load_image(tmp_path / "dot.png", warn=warnings.append) == [200, 30, 60])
    assert warnings == [f"{tmp_path / 'dot.png'}: 1x1 pixels, smaller than 32x32: upscaled, so its class says little"]
    code, doc, stderr = predict_json(str(tmp_path / "dot.png"), "--model", str(bench_models / "tiny_int8.tflite"))
    assert code == 0
    assert f"warning: {warnings[0]}" in stderr.splitlines()
    assert doc["images"][0]["warnings"] == warnings and doc["images"][0]["class"]


# --------------------------------------------------------------------------- arguments and output

@pytest.mark.slow
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


@pytest.mark.slow
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


# --------------------------------------------------------------------------- hostile files

#: Lines predict itself writes on stderr; anything else (a raw Python warning, a traceback) leaked.
OWN_LINES = re.compile(r"(model: |warning: |error: |\d+ of \d+ images? could not be (read|classified)$)")


def predict_measured(*args: str) -> tuple[int, str, str, float]:
    """(exit code, stdout, stderr, peak resident memory in MiB of the largest process) of the console script,
    run under a fresh Python whose only descendants are predict and its worker (ru_maxrss of RUSAGE_CHILDREN
    covers the processes it waited for, and theirs)."""
    code = ("import json, resource, subprocess, sys\n"
            "p = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=300)\n"
            "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
            "print(json.dumps([p.returncode, p.stdout, p.stderr, peak]))")
    proc = subprocess.run([sys.executable, "-c", code, EDGECIFAR, "predict", *args], capture_output=True, text=True,
                          timeout=400)
    returncode, stdout, stderr, max_rss_kib = json.loads(proc.stdout)
    return returncode, stdout, stderr, max_rss_kib / 1024


def assert_own_lines_only(stderr: str) -> None:
    leaked = [line for line in stderr.splitlines() if not OWN_LINES.match(line)]
    assert not leaked, leaked


def jpeg_claiming(path: Path, width: int, height: int) -> Path:
    """A real 64x64 JPEG (a few KB) whose frame header (SOF0) claims ``width`` x ``height`` pixels."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(path, quality=90)
    raw = bytearray(path.read_bytes())
    sof = raw.index(b"\xff\xc0")
    raw[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(raw))
    return path


def png_of_zeros(path: Path, width: int, height: int) -> Path:
    """A greyscale PNG of ``width`` x ``height`` black pixels, compressed row by row (a few hundred KB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), bytes(width + 1)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_a_fifo_named_like_an_image_is_refused_at_once_and_the_other_images_are_classified(tmp_path):
    from test_fuzz import TFLITE

    fifo = tmp_path / "camera.png"
    os.mkfifo(fifo)
    Image.fromarray(picture(seed=4)).save(tmp_path / "real.png")
    proc = subprocess.run([EDGECIFAR, "predict", str(fifo), str(tmp_path / "real.png"), "--model", str(TFLITE)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout.startswith(f"{tmp_path / 'real.png'}: ")
    assert f"error: {fifo}: a FIFO, not an image file" in proc.stderr.splitlines()
    assert_own_lines_only(proc.stderr)


def test_a_tiny_jpeg_claiming_13300x13300_pixels_is_decoded_at_an_eighth_within_512_mib_with_a_warning(tmp_path):
    from test_fuzz import TFLITE

    bomb = jpeg_claiming(tmp_path / "bomb.jpg", 13300, 13300)
    assert bomb.stat().st_size < 8000
    code, stdout, stderr, peak_mib = predict_measured(str(bomb), "--model", str(TFLITE), "--json")
    assert code == 0 and json.loads(stdout)["images"][0]["class"], stderr    # libjpeg fills the rest with grey
    lines = [line for line in stderr.splitlines() if str(bomb) in line]
    assert len(lines) == 1 and lines[0].startswith(f"warning: {bomb}: damaged file (13300x13300 pixels claimed with ")
    assert_own_lines_only(stderr)
    assert peak_mib < 512, f"peak {peak_mib:.0f} MiB"


def test_an_image_with_more_pixels_than_predict_decodes_is_refused_before_decoding_within_512_mib(tmp_path):
    from test_fuzz import TFLITE

    big = png_of_zeros(tmp_path / "big.png", 10_000, 10_000)
    fine = png_of_zeros(tmp_path / "fine.png", 4_000, 3_000)
    code, stdout, stderr, peak_mib = predict_measured(str(big), str(fine), "--model", str(TFLITE))
    assert code == 1 and stdout.startswith(f"{fine}: ")
    assert (f"error: {big}: 10000x10000 pixels, more than predict decodes ({images.MAX_PIXELS / 1e6:g} megapixels); "
            "scale it down first") in stderr.splitlines()
    assert_own_lines_only(stderr)
    assert peak_mib < 512, f"peak {peak_mib:.0f} MiB"


def _damaged_files(folder: Path) -> dict[Path, str]:
    """Files Pillow decodes without a word, each with the start of the defect predict should name."""
    x = picture(seed=6, scale=3)
    Image.fromarray(x).save(folder / "clean.png")
    clean = (folder / "clean.png").read_bytes()
    cut = folder / "cut_in_iend.png"
    cut.write_bytes(clean[:-2])
    crc = bytearray(clean)
    idat = crc.index(b"IDAT")
    crc[idat + 4 + struct.unpack(">I", clean[idat - 4:idat])[0]] ^= 0xFF    # the first byte of IDAT's CRC
    (folder / "bad_crc.png").write_bytes(bytes(crc))
    Image.fromarray(x).save(folder / "restarts.jpg", quality=90, restart_marker_rows=1)
    raw = bytearray((folder / "restarts.jpg").read_bytes())
    raw[raw.index(b"\xff\xd0") + 1] = 0xD3
    (folder / "rst_out_of_order.jpg").write_bytes(bytes(raw))
    raw = (folder / "restarts.jpg").read_bytes()
    sos = raw.index(b"\xff\xda")
    (folder / "stray_bytes.jpg").write_bytes(raw[:sos] + b"\x00\x17\x2a" + raw[sos:])
    return {cut: "cut short inside IEND chunk", folder / "bad_crc.png": "IDAT chunk's checksum (CRC) does not match",
            folder / "rst_out_of_order.jpg": "restart marker RST3 where RST0 belongs",
            folder / "stray_bytes.jpg": "stray byte 0x00 where a marker belongs"}


def test_damaged_png_and_jpeg_files_pillow_decodes_are_classified_with_one_warning_naming_the_defect(tmp_path):
    from test_fuzz import TFLITE

    damaged = _damaged_files(tmp_path)
    halves = []                                                  # cut in half: Pillow refuses them, one error each
    for name in ("clean.png", "restarts.jpg"):
        raw = (tmp_path / name).read_bytes()
        halves.append(tmp_path / f"half_{name}")
        halves[-1].write_bytes(raw[:len(raw) // 2])
    proc = subprocess.run([EDGECIFAR, "predict", *map(str, damaged), *map(str, halves), "--model", str(TFLITE)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "2 of 6 images could not be read" in proc.stderr
    assert [line.split(": ")[0] for line in proc.stdout.splitlines()] == list(map(str, damaged))
    for path, defect in damaged.items():
        lines = [line for line in proc.stderr.splitlines() if str(path) in line]
        assert len(lines) == 1 and lines[0].startswith(f"warning: {path}: damaged file ({defect}"), lines
    for path in halves:
        lines = [line for line in proc.stderr.splitlines() if str(path) in line]
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}: not a readable image (OSError: image file is "
                                                       "truncated"), lines
    assert_own_lines_only(proc.stderr)


def test_pillows_own_warnings_become_one_warning_line_naming_the_file(tmp_path):
    from test_fuzz import TFLITE

    exif = Image.Exif()
    exif[0x010E] = "x" * 200                                     # ImageDescription, stored after the IFD
    path = tmp_path / "corrupt_exif.jpg"
    Image.fromarray(picture(seed=9)).save(path, exif=exif.tobytes()[:-150])   # its data cut off
    proc = subprocess.run([EDGECIFAR, "predict", str(path), "--model", str(TFLITE)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith(f"{path}: ")
    assert [line for line in proc.stderr.splitlines() if str(path) in line] == [
        f"warning: {path}: Tag data larger than file. Skipping tag 270"]
    assert_own_lines_only(proc.stderr)


def test_an_eps_file_is_never_opened_whatever_its_name_so_ghostscript_never_runs(tmp_path):
    from edgecifar.images import ImageError, load_image, photo_formats, photo_suffixes

    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\n0 0 moveto 32 32 lineto stroke\nshowpage\n"
    disguised = tmp_path / "cat.png"
    disguised.write_bytes(eps)
    with pytest.raises(ImageError, match="no image format Pillow knows"):   # not identified, so never rendered
        load_image(disguised)
    assert ".eps" not in photo_suffixes() and ".ps" not in photo_suffixes() and "EPS" not in photo_formats()
