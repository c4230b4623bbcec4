"""edgecifar.data: reading the CIFAR-10 python distribution, tolerating partial copies, rejecting bad ones."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edgecifar import LABELS, data
from edgecifar.errors import DataError
from conftest import batch_pickle, synthetic_members, write_archive, META


def test_synthetic_archive_loads_every_batch_with_counts_and_labels(synthetic_archive):
    ds = data.load(synthetic_archive)
    assert ds.x_train.shape == (400, 32, 32, 3) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (100, 32, 32, 3)
    assert ds.train_batches == ("data_batch_1", "data_batch_2")
    assert ds.label_names == LABELS
    assert "400 training images" in ds.summary() and "100 test images" in ds.summary()


def test_pixels_are_converted_from_channel_planar_rows_to_nhwc(tmp_path):
    img = np.zeros((1, 32, 32, 3), np.uint8)
    img[0, 1, 2] = (10, 20, 30)  # row 1, column 2
    path = write_archive(tmp_path / "a.tar.gz", {"data_batch_1": batch_pickle(img, [3]),
                                                 "test_batch": batch_pickle(img, [3])})
    raw = pickle.loads(batch_pickle(img, [3]), encoding="bytes")[b"data"][0]
    assert (raw[32 + 2], raw[1024 + 32 + 2], raw[2048 + 32 + 2]) == (10, 20, 30)
    assert tuple(data.load(path).x_train[0, 1, 2]) == (10, 20, 30)


def test_unpacked_folder_loads_like_the_archive(tmp_path, synthetic_archive):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, raw in synthetic_members().items():
        (folder / name).write_bytes(raw)
    a, b = data.load(synthetic_archive), data.load(tmp_path)
    assert a.fingerprint == b.fingerprint


def test_a_missing_training_batch_is_tolerated_and_reported(tmp_path):
    members = synthetic_members(n_train_batches=3)
    del members["data_batch_2"]
    ds = data.load(write_archive(tmp_path / "partial.tar.gz", members))
    assert ds.train_batches == ("data_batch_1", "data_batch_3")
    assert len(ds.x_train) == 400


@pytest.mark.real_data
def test_the_shared_copy_has_40000_training_and_1000_test_images(real_archive):
    ds = data.load(real_archive)
    assert (len(ds.x_train), len(ds.x_test)) == (40_000, 1_000)
    assert ds.train_batches == ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4")
    assert np.bincount(ds.y_test, minlength=10).sum() == 1000
    mean = ds.x_train.reshape(-1, 3).mean(0) / 255
    assert np.allclose(mean, [0.4914, 0.4822, 0.4465], atol=0.01)


def test_environment_variable_points_at_the_data(monkeypatch, synthetic_archive):
    monkeypatch.setenv("EDGECIFAR_DATA", str(synthetic_archive))
    assert data.load().source == str(synthetic_archive)


def test_no_data_anywhere_says_where_it_looked_and_how_to_point_at_data(offline):
    with pytest.raises(DataError, match=r"no CIFAR-10 data found \(looked in .*\); pass --data PATH or set EDGECIFAR_DATA"):
        data.load()


def test_an_explicit_path_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(DataError, match="nothere.tar.gz: no CIFAR-10 data there"):
        data.load(tmp_path / "nothere.tar.gz")


def test_truncated_archive_is_one_clear_error(tmp_path, synthetic_archive):
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(synthetic_archive.read_bytes()[:5000])
    with pytest.raises(DataError, match="cut.tar.gz: truncated or corrupt archive"):
        data.load(cut)


def test_random_bytes_are_not_an_archive(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DataError, match="junk.tar.gz: truncated or corrupt archive"):
        data.load(junk)


@pytest.mark.parametrize("raw, message", [
    (b"\x80\x02not a pickle at all", "data_batch_1: not a readable CIFAR-10 pickle"),
    (pickle.dumps([1, 2, 3], protocol=2), "data_batch_1: expected a dict"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}, protocol=2), "data_batch_1: missing 'data' or 'labels'"),
    (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2),
     r"data_batch_1: data has shape \(2, 100\), expected \(N, 3072\)"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}, protocol=2),
     "data_batch_1: labels out of range 0-9"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, protocol=2),
     r"data_batch_1: \(1,\) labels for 2 images"),
    (pickle.dumps({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, protocol=2), "data_batch_1: empty batch"),
])
def test_malformed_batches_are_rejected_naming_the_file(tmp_path, raw, message):
    members = synthetic_members(n_train_batches=1)
    members["data_batch_1"] = raw
    with pytest.raises(DataError, match=message):
        data.load(write_archive(tmp_path / "bad.tar.gz", members))


def test_an_archive_without_test_batch_is_rejected(tmp_path):
    members = synthetic_members()
    del members["test_batch"]
    with pytest.raises(DataError, match="no test_batch inside"):
        data.load(write_archive(tmp_path / "notest.tar.gz", members))


def test_an_archive_without_training_batches_is_rejected(tmp_path):
    with pytest.raises(DataError, match="no data_batch_N files inside"):
        data.load(write_archive(tmp_path / "x.tar.gz", {"batches.meta": META}))


def test_the_cli_reports_bad_data_in_one_line_without_traceback(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"garbage")
    proc = subprocess.run([sys.executable, "-m", "edgecifar", "train", "baseline", "--data", str(junk),
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {junk}: truncated or corrupt archive")
    assert not (tmp_path / "run" / "model.keras").exists()


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(1, 30), min_size=2, max_size=10), frac=st.floats(0, 1), seed=st.integers(0, 99))
def test_stratified_split_is_exact_disjoint_proportional_and_deterministic(counts, frac, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    n_val = int(frac * len(labels))
    tr, val = data.stratified_split(labels, n_val, seed)
    assert len(val) == n_val and len(tr) + len(val) == len(labels)
    assert not set(tr) & set(val)
    expected = np.array(counts) * n_val / len(labels)
    got = np.bincount(labels[val], minlength=len(counts))
    assert np.all(np.abs(got - expected) < 1.0 + 1e-9)
    assert np.array_equal(val, data.stratified_split(labels, n_val, seed)[1])


def test_fingerprint_changes_when_a_single_pixel_changes(synthetic_archive):
    ds = data.load(synthetic_archive)
    x = ds.x_test.copy()
    x[0, 0, 0, 0] ^= 1
    changed = data.Cifar10(ds.x_train, ds.y_train, x, ds.y_test, ds.source)
    assert changed.fingerprint != ds.fingerprint


# --------------------------------------------------------------------------- untrusted pickles

class RunsOnLoad:
    """Pickles as a call of ``func(*args)``: what a hostile batch does to run code when it is unpickled."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class TouchesOnSetstate:
    """A plain object of a class of this module: unpickling it would import the module and call __setstate__."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __setstate__(self, state):
        open(state["marker"], "w").close()


def _hostile_payloads(marker):
    """Each way a pickle can run code, by name."""
    import builtins
    import os
    import subprocess as sp

    return {
        "os.system": RunsOnLoad(os.system, f"touch {marker}"),
        "builtins.eval": RunsOnLoad(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "subprocess": RunsOnLoad(sp.call, ["touch", str(marker)]),
        "nested object": {"deep": [1, {"deeper": TouchesOnSetstate(marker)}]},
    }


def _first_global(obj) -> str:
    """The global a protocol 2 pickle of ``obj`` names first, as written (Python 2 module names: posix.system,
    __builtin__.eval, commands.call)."""
    import pickletools

    return next(arg.replace(" ", ".") for op, arg, _ in pickletools.genops(pickle.dumps(obj, protocol=2))
                if op.name == "GLOBAL")


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "subprocess", "nested object"])
@pytest.mark.parametrize("member", ["data_batch_1", "test_batch", "batches.meta"])
def test_a_pickle_that_would_run_code_is_refused_naming_the_member_and_the_global_and_nothing_runs(
        tmp_path, kind, member):
    marker = tmp_path / "payload-ran"
    payload = _hostile_payloads(marker)[kind]
    qualified = _first_global(payload)
    members = synthetic_members(n_train_batches=1)
    if member == "batches.meta":
        members[member] = pickle.dumps({b"label_names": [payload], b"num_vis": 3072}, protocol=2)
    else:
        x, y = np.zeros((2, 32, 32, 3), np.uint8), [0, 1]
        members[member] = batch_pickle(x, y, filenames=[b"a.png", payload])
    path = write_archive(tmp_path / "hostile.tar.gz", members)
    with pytest.raises(DataError) as caught:
        data.load(path)
    message = str(caught.value)
    assert not marker.exists(), f"the {kind} payload ran"
    assert message.startswith(f"{path}:{member}: refused: the pickle calls {qualified},"), message
    assert "nothing was run" in message and "\n" not in message


def test_an_object_array_in_a_batch_is_refused_before_its_objects_are_built(tmp_path):
    members = synthetic_members(n_train_batches=1)
    members["data_batch_1"] = pickle.dumps({b"data": np.array([[1, "x"]], dtype=object), b"labels": [0]}, protocol=2)
    refused = r"data_batch_1: refused: the pickle calls numpy\.dtype\(\|O\): an object array"
    with pytest.raises(DataError, match=refused):
        data.load(write_archive(tmp_path / "objects.tar.gz", members))


@pytest.mark.real_data
def test_the_official_batches_name_only_admitted_globals_and_load_bit_identically(real_archive):
    import pickletools
    import tarfile

    reference, named = {}, set()
    with tarfile.open(real_archive) as tar:
        for info in tar:
            name = info.name.rsplit("/", 1)[-1]
            if not info.isfile():
                continue
            raw = tar.extractfile(info).read()
            named |= {tuple(arg.split(" ", 1)) for op, arg, _ in pickletools.genops(raw) if op.name == "GLOBAL"}
            reference[name] = pickle.loads(raw, encoding="bytes")   # the trusted official copy, unrestricted
    assert named and named <= set(data.SAFE_GLOBALS)
    ds = data.load(real_archive)
    batches = [reference[n] for n in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4")]
    expected = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    assert (len(ds.x_train), len(ds.x_test)) == (40_000, 1_000)
    np.testing.assert_array_equal(ds.x_train, expected)
    np.testing.assert_array_equal(ds.y_train, np.concatenate([b[b"labels"] for b in batches]))
    x_test = reference["test_batch"][b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(ds.x_test, x_test)
    np.testing.assert_array_equal(ds.y_test, reference["test_batch"][b"labels"])
    assert ds.label_names == tuple(n.decode() for n in reference["batches.meta"][b"label_names"])
