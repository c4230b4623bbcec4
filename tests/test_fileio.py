"""Paths that files record travel: a shipped manifest names no one machine's user folder."""

from __future__ import annotations

from pathlib import Path

from edgecifar.fileio import portable_path


def test_a_path_under_the_working_directory_is_recorded_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert portable_path(tmp_path / "runs" / "a" / "model.keras") == "runs/a/model.keras"


def test_a_path_in_the_home_folder_is_recorded_under_a_tilde(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert portable_path(home / "edgecifar-runs" / "zoo" / "model.keras") == "~/edgecifar-runs/zoo/model.keras"


def test_any_other_path_stays_absolute(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert portable_path("/opt/models/model.keras") == str(Path("/opt/models/model.keras"))
