"""Packaging, as a user gets it: the wheel in a fresh venv, through the ``edgecifar`` console script.

The development venv is an editable install, whose import hook hides mistakes (``importlib.util`` was
never imported and every command of the base install failed): these tests build the wheel from a copy of
the source tree and install it, without extras and with ``[bench]``, into venvs of their own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import fresh_python, separable_images
from edgecifar import LABELS, zoo
from edgecifar.cli import COMMANDS
from edgecifar.units import plural

ROOT = Path(__file__).resolve().parents[1]
#: Not part of a source tree: the venv, git, run folders and earlier build output (a stale build/lib would
#: leak deleted modules into the wheel).
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "runs", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".hypothesis", "logs")


def run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built (``pip wheel --no-deps``) from a copy of the working tree."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    built = run([sys.executable, "-m", "pip", "wheel", source, "--no-deps", "--no-build-isolation", "-q",
                 "-w", tmp / "dist"])
    assert built.returncode == 0, built.stderr[-2000:]
    return next((tmp / "dist").glob("edgecifar-*.whl"))


def fresh_venv(folder: Path, requirement: str) -> Path:
    """A new venv (no system packages) with ``pip install REQUIREMENT``; returns its bin folder."""
    made = run([sys.executable, "-m", "venv", folder])
    assert made.returncode == 0, made.stderr
    installed = run([folder / "bin" / "python", "-m", "pip", "install", "-q", "--no-compile", requirement])
    assert installed.returncode == 0, installed.stderr[-2000:]
    return folder / "bin"


def user_env(tmp: Path, data: Path) -> dict:
    """A user's environment: the test data, no runs folder, no checkout on the path, 80 columns."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGECIFAR_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, "EDGECIFAR_DATA": str(data), "EDGECIFAR_RUNS": str(tmp / "runs"), "COLUMNS": "80"}


def importable(bin_dir: Path, module: str) -> bool:
    code = f"import importlib.util; print(importlib.util.find_spec({module!r}) is not None)"
    return run([bin_dir / "python", "-c", code]).stdout.strip() == "True"


@pytest.fixture
def photo(tmp_path) -> Path:
    """A real PNG, larger than 32x32 and not square, as a user's photo is."""
    images, _ = separable_images(1)
    path = tmp_path / "photo.png"
    Image.fromarray(images[0]).resize((56, 40)).save(path)
    return path


@pytest.mark.slow
def test_the_built_wheel_imports_all_three_stages(wheel, tmp_path):
    target = tmp_path / "site"
    done = run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", target, wheel])
    assert done.returncode == 0, done.stderr
    code = ("import edgecifar, edgecifar.train, edgecifar.export, edgecifar.bench, edgecifar.models, edgecifar.runtime;"
            "print(edgecifar.train.__file__); print(edgecifar.export.__file__); print(edgecifar.bench.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                         capture_output=True, text=True, timeout=120, check=True).stdout.split()
    assert [Path(p).parent.name for p in out] == ["train", "export", "bench"]
    assert all(str(target) in p for p in out)
    import zipfile

    shipped = zipfile.ZipFile(wheel).namelist()
    assert not any(name.startswith(("research/", "tests/")) for name in shipped)   # the lab stays in the repo


@pytest.mark.slow
def test_the_base_install_runs_help_zoo_predict_and_bench_without_tensorflow_or_onnxruntime(
        wheel, synthetic_archive, photo, tmp_path):
    bin_dir = fresh_venv(tmp_path / "venv", str(wheel))
    assert not importable(bin_dir, "tensorflow") and not importable(bin_dir, "onnxruntime")
    assert importable(bin_dir, "ai_edge_litert")
    edgecifar, env = bin_dir / "edgecifar", user_env(tmp_path, synthetic_archive)

    helped = run([edgecifar, "--help"], cwd=tmp_path, env=env)
    assert helped.returncode == 0, helped.stderr
    assert all(c in helped.stdout for c in ("train", "export", "bench", "predict", "models", "zoo"))

    listed = run([edgecifar, "zoo"], cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert all(p.name in listed.stdout for p in zoo.files())

    predicted = run([edgecifar, "predict", photo.name], cwd=photo.parent, env=env)
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.startswith("photo.png: ") and any(label in predicted.stdout for label in LABELS)
    assert "XNNPACK" not in predicted.stdout + predicted.stderr      # LiteRT's C++ INFO line is filtered

    benched = run([edgecifar, "bench"], cwd=tmp_path, env=env)      # by default: what this install can run
    assert benched.returncode == 0, benched.stdout + benched.stderr
    onnx = [p.name for p in zoo.files() if p.suffix == ".onnx"]
    tflite = [p.name for p in zoo.files() if p.suffix == ".tflite"]
    assert onnx and tflite
    skip_lines = [line for line in benched.stderr.splitlines() if "skipped" in line]
    assert skip_lines == [f"bench: skipped {plural(len(onnx), '.onnx file')}: onnxruntime is not installed "
                          "(pip install 'edgecifar[bench]')"]
    assert all(name in benched.stdout for name in tflite)
    assert not any(name in benched.stdout for name in onnx)
    assert "XNNPACK" not in benched.stdout + benched.stderr and "Traceback" not in benched.stderr

    named = run([edgecifar, "bench", zoo.ZOO_DIR / onnx[0], "--runs", "5"], cwd=tmp_path, env=env)
    assert named.returncode == 1                                     # a file the user names is still a row
    assert f"{onnx[0]}: onnxruntime is not installed" in named.stdout
    assert named.stderr.splitlines()[-1].startswith("1 of 1 row") and "Traceback" not in named.stderr

    # Your photos, as a folder of class folders, for bench and predict: still no TensorFlow.
    images, labels = separable_images(12, seed=5)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = tmp_path / "photos" / ("cat" if i % 2 else "ship")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).resize((48, 48)).save(folder / f"{i}.png")
    on_folder = run([edgecifar, "bench", tflite[0], "--data", "photos", "--runs", "5"], cwd=tmp_path,
                    env={**env, "EDGECIFAR_CACHE": str(tmp_path / "cache")})
    assert on_folder.returncode == 0, on_folder.stdout + on_folder.stderr
    assert "12 test images from photos" in on_folder.stderr and "classes matched by name" in on_folder.stdout
    in_folders = run([edgecifar, "predict", "photos"], cwd=tmp_path, env=env)
    assert in_folders.returncode == 0, in_folders.stderr
    assert len(in_folders.stdout.splitlines()) == 12 and in_folders.stdout.startswith("photos/cat/")


@pytest.mark.slow
def test_the_bench_extra_measures_the_onnx_files_too(wheel, synthetic_archive, tmp_path):
    bin_dir = fresh_venv(tmp_path / "venv", f"{wheel}[bench]")
    assert importable(bin_dir, "onnxruntime") and not importable(bin_dir, "tensorflow")
    benched = run([bin_dir / "edgecifar", "bench"], cwd=tmp_path, env=user_env(tmp_path, synthetic_archive))
    assert benched.returncode == 0, benched.stdout + benched.stderr  # every row measured (exit 1 otherwise)
    assert "skipped" not in benched.stderr
    assert all(p.name in benched.stdout for p in zoo.files())
    assert any(p.suffix == ".onnx" for p in zoo.files())


#: The commands a user is promised, in the order ``--help`` lists them.
PIPELINE = ["models", "train", "export", "bench", "predict", "zoo"]


def help_entries(text: str) -> list[str]:
    """The command names of ``--help``'s Commands section: one per entry line (a wrapped description's
    continuation lines are indented further, and the group's own description is above the section)."""
    section = text.split("\nCommands:\n", 1)[1]
    return [m.group(1) for m in map(re.compile(r"  (\S+)( |$)").match, section.splitlines()) if m]


def test_help_lists_every_registered_command_as_an_entry_of_its_commands_section():
    """A command whose module cannot be found is silently left out of the group (cli.LazyGroup), while the
    group's description still says "train, export and benchmark": only the entries prove it is there."""
    out = subprocess.run([sys.executable, "-m", "edgecifar", "--help"], capture_output=True, text=True,
                         timeout=60, check=True, env={**os.environ, "COLUMNS": "80"}).stdout
    assert help_entries(out) == list(COMMANDS) == PIPELINE


def test_importing_the_package_and_runtime_does_not_import_tensorflow():
    code = "import sys, edgecifar, edgecifar.runtime, edgecifar.data, edgecifar.cli; print('tensorflow' in sys.modules)"
    assert fresh_python(code) == "False"


def test_models_command_lists_every_registered_model_with_parameters():
    out = subprocess.run([sys.executable, "-m", "edgecifar", "models"], capture_output=True, text=True,
                         timeout=300, check=True, env={**__import__("os").environ, "COLUMNS": "200"}).stdout
    for name, params in (("baseline", "315,722"), ("resnet8", "78,666")):
        assert name in out and params in out
