"""Exits and logs that fit scripts and CI, through the console script: argument errors exit 2 before
TensorFlow loads, TensorFlow's start-up notes stay off the screen while its real messages show, piped
training logs one unwrapped line per epoch, an interrupted run names the command that continues it, and
``export --strict`` fails a build on an accuracy drop."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import fresh_python
from edgecifar.errors import ABSL_PREAMBLE, without_startup_notes
from edgecifar.units import size

EDGECIFAR = str(Path(sys.executable).with_name("edgecifar"))  # the console script of this venv


def edgecifar(*args: str, env: dict | None = None, timeout: int = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([EDGECIFAR, *args], capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else os.environ.copy(), **kw)


def exit_code_and_tensorflow_loaded(*args: str) -> tuple[int, str, bool]:
    """Run ``edgecifar ARGS`` in a fresh interpreter: its exit code, its output and whether TensorFlow loaded."""
    code = ("import sys, json\n"
            "from click.testing import CliRunner\n"
            "from edgecifar.cli import main\n"
            f"r = CliRunner().invoke(main, {list(args)!r})\n"
            "print(json.dumps([r.exit_code, r.output, 'tensorflow' in sys.modules]))")
    return tuple(json.loads(fresh_python(code)))


# --------------------------------------------------------------------------- argument errors

def test_train_without_a_recipe_exits_2_naming_the_recipes_before_tensorflow_loads():
    code, output, tf_loaded = exit_code_and_tensorflow_loaded("train")
    assert code == 2 and not tf_loaded
    assert "missing RECIPE, one of: baseline, deeper" in output and "--list describes them" in output
    code, output, tf_loaded = exit_code_and_tensorflow_loaded("train", "--list")
    assert code == 0 and "baseline" in output and not tf_loaded


def test_train_resume_without_a_checkpoint_exits_2_before_tensorflow_loads(tmp_path):
    code, output, tf_loaded = exit_code_and_tensorflow_loaded("train", "baseline", "--resume", "--out",
                                                              str(tmp_path / "fresh"))
    assert (code, tf_loaded) == (2, False)
    assert output == f"error: {tmp_path / 'fresh'}: no checkpoint to resume from (run without --resume to start)\n"


def test_train_into_an_existing_run_exits_2_before_tensorflow_loads(tmp_path):
    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    code, output, tf_loaded = exit_code_and_tensorflow_loaded("train", "baseline", "--out", str(tmp_path / "run"))
    assert (code, tf_loaded) == (2, False)
    assert "a run is already there; add --resume to continue it or --overwrite to start again" in output
    code, output, tf_loaded = exit_code_and_tensorflow_loaded("train", "no_such_recipe")
    assert (code, tf_loaded) == (2, False) and "unknown recipe 'no_such_recipe'; known: baseline" in output


# --------------------------------------------------------------------------- TensorFlow's start-up lines

#: Verbatim: what ``import tensorflow`` (tensorflow-cpu 2.21) printed on this machine with TF_CPP_MIN_LOG_LEVEL=1
#: and TF_ENABLE_ONEDNN_OPTS=banana (once per native library), plus an error line in absl's initialised format.
STARTUP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
W0000 00:00:1795878677.953816   12766 port.cc:148] TF_ENABLE_ONEDNN_OPTS is not set to either '0', 'false', '1', or 'true'. Using the default setting: true
I0000 00:00:1795878677.953863   12766 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
E1128 15:10:47.123456   12766 cuda_dnn.cc:8310] Unable to register cuDNN factory
a line that is not from absl
"""


def test_start_up_filter_keeps_what_the_log_level_lets_through_and_everything_not_from_absl():
    assert without_startup_notes(STARTUP, 0) == STARTUP
    lines = STARTUP.splitlines(keepends=True)
    assert without_startup_notes(STARTUP, 1) == "".join([lines[1], lines[3], lines[4]])
    assert without_startup_notes(STARTUP, 2) == "".join(lines[3:])
    assert without_startup_notes(STARTUP, 3) == lines[4]


@pytest.mark.parametrize("level", [None, "2", "3"])
def test_a_command_that_loads_tensorflow_prints_only_its_own_lines(level, tmp_path):
    junk = tmp_path / "cifar-10-python.tar.gz"
    junk.write_bytes(b"not an archive" * 10)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if level:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    proc = edgecifar("train", "baseline", "--data", str(junk), "--out", str(tmp_path / "run"), env=env)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(f"error: {junk}: "), proc.stderr
    assert proc.stdout == ""


def test_a_real_tensorflow_warning_at_start_up_still_shows(tmp_path):
    junk = tmp_path / "cifar-10-python.tar.gz"
    junk.write_bytes(b"not an archive" * 10)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "1", "TF_ENABLE_ONEDNN_OPTS": "banana"}
    proc = edgecifar("train", "baseline", "--data", str(junk), "--out", str(tmp_path / "run"), env=env)
    assert proc.returncode == 2
    assert "TF_ENABLE_ONEDNN_OPTS is not set to either '0', 'false', '1', or 'true'" in proc.stderr
    assert "oneDNN custom operations are on" not in proc.stderr and ABSL_PREAMBLE not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"error: {junk}: ")


# --------------------------------------------------------------------------- training logs

def train_args(archive: Path, out: Path, epochs: int) -> list[str]:
    return ["train", "baseline", "--epochs", str(epochs), "--batch-size", "64", "--data", str(archive),
            "--val-size", "50", "--out", str(out)]


@pytest.mark.slow
@pytest.mark.parametrize("quiet", [True, False], ids=["quiet", "default"])
def test_piped_training_logs_one_unwrapped_line_per_epoch(quiet, synthetic_archive, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}   # a pipe: rich would fall back to 80 columns
    proc = edgecifar(*train_args(synthetic_archive, tmp_path / "run", 2), "--ema", "0.9",   # a longer line
                     *(["--quiet"] if quiet else []), env=env)
    assert proc.returncode == 0, proc.stderr
    epochs = [line for line in proc.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    for line in epochs:                                   # loss, accuracy in percent, speed: all on the line
        assert len(line) > 80 and " acc " in line and "% val_loss " in line and "% ema_val_acc " in line
        assert line.endswith("s")
    assert not [line for line in proc.stderr.splitlines() if line.startswith(("img/s", "s"))]   # no wrapped tails
    summary = proc.stdout.splitlines()
    assert summary[0].startswith("baseline seed 0: 2 epochs in ")
    assert "% on 50 images; test accuracy " in summary[1] and summary[1].endswith("% on 100 images")
    assert summary[2].startswith(f"wrote {tmp_path / 'run'}/model.keras, history.csv, metrics.json; kept checkpoint/ (")


@pytest.mark.slow
def test_an_interrupted_training_names_the_command_that_continues_it(synthetic_archive, tmp_path):
    out = tmp_path / "run"
    epochs = 20   # ~0.1 s each: 6 epochs could all finish between the first checkpoint and SIGINT on a loaded machine
    # A test run started in the background (`cmd &`) inherits SIGINT ignored, and Python then keeps it ignored:
    # the child gets the default disposition back, as a user's terminal gives it.
    proc = subprocess.Popen([EDGECIFAR, *train_args(synthetic_archive, out, epochs), "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    state = out / "checkpoint" / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not state.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    done = json.loads(state.read_text())["epochs_done"]
    assert 1 <= done < epochs, "the run must be interrupted mid-way"
    last = stderr.splitlines()[-1]
    prefix = f"interrupted: {done} epoch{'s' if done > 1 else ''} saved in {out / 'checkpoint'}; continue with: "
    assert last.startswith(prefix) and "Traceback" not in stderr
    command = shlex.split(last[len(prefix):])
    assert command[:3] == ["edgecifar", "train", "baseline"] and command[-1] == "--resume"
    assert sorted(command) == sorted(["edgecifar", *train_args(synthetic_archive, out, epochs), "--quiet", "--resume"])

    resumed = subprocess.run([EDGECIFAR, *command[1:]], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {out} after epoch {done}/{epochs}" in resumed.stderr
    assert json.loads((out / "metrics.json").read_text())["epochs"] == epochs


# --------------------------------------------------------------------------- export --strict

@pytest.fixture(scope="module")
def flattened_model(trained_run, tmp_path_factory) -> Path:
    """The trained model with its logits scaled by 1e-4: Keras still ranks the classes right, but every
    probability is 0.1 +- 0.0001, below one step of the int8 softmax output (1/256), so the int8 file ties
    every class and loses tens of points. A real accuracy drop, made by the real converter."""
    import keras

    base = keras.saving.load_model(trained_run / "model.keras", compile=False)
    logits = base.layers[-2].output
    probs = keras.layers.Activation("softmax")(keras.layers.Rescaling(1e-4)(logits))
    run = tmp_path_factory.mktemp("flat")
    keras.Model(base.inputs, probs).save(run / "model.keras")
    shutil.copy(trained_run / "metrics.json", run)      # the run's held-out split, so export validates outside it
    return run


@pytest.mark.slow
def test_export_strict_exits_1_when_a_format_drops_more_than_the_threshold(flattened_model, synthetic_archive,
                                                                          tmp_path):
    args = ["export", str(flattened_model), "--int8", "--fp32", "--calibration", "100", "--data",
            str(synthetic_archive), "--threshold", "5"]
    lenient = edgecifar(*args, "--out", str(tmp_path / "lenient"))
    assert lenient.returncode == 0, lenient.stderr              # a drop is a warning in the table by default
    assert "error:" not in lenient.stderr
    fp32 = tmp_path / "lenient" / "baseline_fp32.tflite"
    assert size(fp32.stat().st_size) in lenient.stdout and "100.00%" in lenient.stdout   # KiB/MiB, percent
    manifest = json.loads((tmp_path / "lenient" / "edgecifar.json").read_text())
    status = {e["file"]: e["validation"]["status"] for e in manifest["files"]}
    assert status == {"baseline_fp32.tflite": "passed", "baseline_int8.tflite": "accuracy drop"}
    strict = edgecifar(*args, "--out", str(tmp_path / "strict"), "--strict")
    assert strict.returncode == 1, strict.stderr
    errors = [line for line in strict.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: TFLite int8 (baseline_int8.tflite) is ")
    assert errors[0].endswith("points less accurate than Keras, more than --threshold 5 (--strict)")
    assert (tmp_path / "strict" / "baseline_int8.tflite").exists() and (tmp_path / "strict" / "baseline_fp32.tflite").exists()


# --------------------------------------------------------------------------- outputs checked before the work

def test_agreement_and_probe_refuse_an_unwritable_output_before_any_device_or_model_work(tmp_path):
    from click.testing import CliRunner

    from edgecifar.bench.agreement import agreement_command
    from research.probe import probe_command
    from edgecifar.zoo import ZOO_DIR

    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "r.json"
    # No data and an ssh device nobody listens on: either would be the error if the output were checked later.
    result = CliRunner().invoke(agreement_command, ["--device", "ssh://nobody@127.0.0.1:9", "--data",
                                                    str(tmp_path / "no-data"), "--json", str(out)])
    assert (result.exit_code, result.stderr) == (2, f"error: --json {out}: cannot make its folder: "
                                                    f"{tmp_path / 'a-file'} is not a folder\n")
    reference = next(ZOO_DIR.glob("*.tflite"), None)
    if reference is None:
        pytest.skip("no .tflite file shipped to time against")
    result = CliRunner().invoke(probe_command, ["edge_nano", "--reference", str(reference), "--data",
                                                str(tmp_path / "no-data"), "--markdown", str(out)])
    assert (result.exit_code, result.stderr) == (2, f"error: --markdown {out}: cannot make its folder: "
                                                    f"{tmp_path / 'a-file'} is not a folder\n")
