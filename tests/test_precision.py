"""Training precision: a recipe's mixed bfloat16 is a wish, granted only where the CPU runs bf16 natively
(avx512_bf16 or AMX; emulated it costs 6-8x); --precision overrides it; the decision is said in one line, kept in
metrics.json and in the checkpoint, and a resumed run keeps it. The rule is tested on feature tuples, never on
this host's CPU."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import stopped_after_one_epoch
from edgecifar.train import recipes
from edgecifar.train.recipes import resolve_precision

EDGECIFAR = str(Path(sys.executable).parent / "edgecifar")
AVX2 = ("avx2",)                                            # AMD EPYC (Zen 2/3)
VNNI = ("avx2", "avx512f", "avx512_vnni")                   # Cascade Lake: int8 dot products, no bf16
BF16 = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16")    # Cooper Lake, Zen 4
AMX = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")  # Sapphire Rapids


@pytest.mark.parametrize("features, policy", [(AVX2, "float32"), (VNNI, "float32"), (BF16, "mixed_bfloat16"),
                                              (AMX, "mixed_bfloat16"), (("amx_bf16",), "mixed_bfloat16"),
                                              ((), "float32")])
def test_auto_grants_a_recipes_bf16_wish_only_on_a_cpu_that_runs_bf16_natively(features, policy):
    decided = resolve_precision(True, "auto", features)
    assert decided.policy == policy and decided.bf16 == (policy == "mixed_bfloat16")
    if decided.bf16:
        assert decided.reason.startswith("the recipe asks for mixed bfloat16 and this CPU runs bf16 natively (")
        assert all(f in decided.reason for f in features if f in ("avx512_bf16", "amx_bf16"))
    else:
        assert "has no avx512_bf16 or amx_bf16" in decided.reason and "--precision bfloat16" in decided.reason


@pytest.mark.parametrize("features", [AVX2, VNNI, BF16, AMX])
def test_auto_keeps_a_float32_recipe_in_float32_on_every_cpu(features):
    assert resolve_precision(False, "auto", features) == recipes.Precision("float32", "the recipe trains in float32")


@pytest.mark.parametrize("wish", [False, True])
@pytest.mark.parametrize("features", [AVX2, AMX])
def test_an_explicit_precision_is_obeyed_on_any_cpu_and_says_when_bf16_is_emulated(wish, features):
    assert resolve_precision(wish, "float32", features).policy == "float32"
    forced = resolve_precision(wish, "bfloat16", features)
    assert forced.policy == "mixed_bfloat16"
    assert forced.reason == "--precision bfloat16" + ("" if features == AMX else " (emulated on this CPU: slow)")


def test_the_cli_offers_exactly_the_precisions_the_rule_knows():
    from edgecifar.train.command import train

    (option,) = [p for p in train.params if p.name == "precision"]
    assert tuple(option.type.choices) == recipes.PRECISION_CHOICES == ("auto", "float32", "bfloat16")
    assert option.default == "auto"


@pytest.fixture(scope="module")
def bf16_run(synthetic_archive, tmp_path_factory) -> Path:
    """baseline (a float32 recipe) forced to --precision bfloat16 for 2 epochs of batch 32, stopped after the first."""
    return stopped_after_one_epoch(synthetic_archive, tmp_path_factory.mktemp("precision") / "bf16",
                                   recipes.get("baseline"), precision="bfloat16")


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EDGECIFAR, "train", "baseline", "--quiet", "--val-size", "50", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_checkpoint_records_the_precision_the_run_started_in(bf16_run):
    state = json.loads((bf16_run / "checkpoint" / "state.json").read_text())
    assert state["precision"] == "mixed_bfloat16" and state["settings"]["mixed_bfloat16"] is False  # the wish kept


@pytest.mark.slow
def test_a_resumed_run_keeps_its_precision_says_so_and_metrics_json_records_it(bf16_run, synthetic_archive,
                                                                                tmp_path):
    run_dir = shutil.copytree(bf16_run, tmp_path / "run")
    proc = _train("--out", str(run_dir), "--resume", "--epochs", "2", "--batch-size", "32",
                  "--data", str(synthetic_archive))  # --precision auto, which starts a baseline run in float32
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [line for line in proc.stderr.splitlines() if line.startswith("precision:")] == [
        "precision: mixed_bfloat16 (the run's own, kept by --resume)"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["precision"]["policy"] == "mixed_bfloat16" and metrics["epochs"] == 2
    assert metrics["recipe_settings"]["mixed_bfloat16"] is False


@pytest.mark.slow
def test_resuming_in_another_precision_exits_2_with_one_line_and_changes_nothing(bf16_run, synthetic_archive,
                                                                                 tmp_path):
    run_dir = shutil.copytree(bf16_run, tmp_path / "run")
    state = run_dir / "checkpoint" / "state.json"
    before = state.read_bytes()
    proc = _train("--out", str(run_dir), "--resume", "--epochs", "2", "--batch-size", "32",
                  "--data", str(synthetic_archive), "--precision", "float32")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"error: {state}: this run started in mixed_bfloat16 and cannot resume in float32 "
                           "(--precision float32); resume with --precision auto, which keeps its precision, or start "
                           "a new run folder (--out) for the new one\n")
    assert state.read_bytes() == before and not (run_dir / "model.keras").exists()


@pytest.mark.slow
def test_a_new_run_says_its_precision_in_one_line_and_metrics_json_records_why(synthetic_archive, tmp_path):
    proc = _train("--out", str(tmp_path / "run"), "--epochs", "1", "--data", str(synthetic_archive),
                  "--precision", "float32")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [line for line in proc.stderr.splitlines() if line.startswith("precision:")] == [
        "precision: float32 (--precision float32)"]
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())["precision"]
    assert (recorded["policy"], recorded["reason"], recorded["asked"]) == ("float32", "--precision float32", "float32")
    assert isinstance(recorded["cpu_features"], list)
