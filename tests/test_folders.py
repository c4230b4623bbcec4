"""``--data`` pointed at your own photos: a folder of class folders (optionally in train/ val/ test/) loads as
a data set with the same fields as CIFAR-10, decoded by predict's own code, hostile entries skipped or said in
one line each, and cached so that a second load decodes nothing. Every image here is a real file the test
writes with Pillow (or one a package ships)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecifar import data, folders, images
from edgecifar.errors import DataError

#: A distinct colour per class, so a decoded image shows which folder it came from.
COLOURS = {"ant": (200, 20, 20), "bee": (20, 200, 20), "Moth": (20, 20, 200), "wasp": (200, 200, 20)}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Every test caches in its own folder, never in the user's ~/.cache."""
    monkeypatch.setenv(folders.CACHE_VAR, str(tmp_path / "cache"))
    return tmp_path / "cache" / "folders"


def photo(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (48, 36), **save) -> Path:
    """A real image file of one colour (``size`` = width, height), its format from its suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, **save)
    return path


def class_folder(root: Path, classes=("ant", "bee"), per_class: int = 2) -> Path:
    """``root/<class>/<i>.png|.jpg``: ``per_class`` images of each class's colour, PNG and JPEG in turn."""
    for name in classes:
        for i in range(per_class):
            photo(root / name / f"{i}.{'png' if i % 2 == 0 else 'jpg'}", COLOURS[name], (40 + 8 * i, 36))
    return root


def colour_of(image: np.ndarray) -> tuple[int, ...]:
    """The class colour an image is closest to (JPEG shifts colours a little)."""
    means = image.reshape(-1, 3).mean(0)
    return min(COLOURS.values(), key=lambda c: np.abs(means - c).sum())


def test_classes_are_the_subfolder_names_sorted_and_each_image_is_labelled_by_its_folder(tmp_path):
    root = class_folder(tmp_path / "photos", ("wasp", "ant", "Moth"), per_class=3)
    photo(root / "ant" / ".hidden.png", COLOURS["wasp"])            # hidden files and folders are skipped
    photo(root / ".thumbs" / "x.png", COLOURS["wasp"])
    (root / "ant" / "notes.txt").write_text("not an image suffix: ignored")
    warnings = []
    ds = data.load(root, warn=warnings.append)
    assert ds.label_names == ("Moth", "ant", "wasp")                   # sorted by code point, as ImageFolder
    assert ds.x_train.shape == (9, 32, 32, 3) and ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [colour_of(x) for x in ds.x_train] == [COLOURS[ds.label_names[y]] for y in ds.y_train]
    assert warnings == []


def test_train_val_and_test_folders_become_the_splits_with_val_exposed(tmp_path):
    root = tmp_path / "photos"
    class_folder(root / "train", per_class=4)
    class_folder(root / "val", per_class=2)
    class_folder(root / "test", per_class=3)
    photo(root / "__MACOSX" / "train" / "ant" / "._0.png", COLOURS["ant"])   # what a zip made on a Mac holds
    ds = data.load(root)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (8, 4, 6)
    assert ds.y_train.tolist() == [0] * 4 + [1] * 4 and ds.y_val.tolist() == [0, 0, 1, 1]
    assert ds.y_test.tolist() == [0] * 3 + [1] * 3
    assert ds.train_batches == ("train",)
    assert "train/ 8, val/ 4, test/ 6 images" in ds.summary() and "no test/" not in ds.summary()
    assert ds.fingerprint == data.load(root).fingerprint


def test_without_a_test_folder_the_val_images_are_the_test_images_and_the_summary_says_so(tmp_path):
    root = tmp_path / "photos"
    class_folder(root / "train", per_class=3)
    class_folder(root / "val", per_class=1)
    ds = data.load(root)
    np.testing.assert_array_equal(ds.x_test, ds.x_val)
    assert len(ds.x_train) == 6 and len(ds.x_test) == 2
    assert "no test/: the val/ images are the test images" in ds.summary()


def test_without_split_folders_every_image_is_a_training_and_a_test_image_and_the_summary_says_so(tmp_path):
    ds = data.load(class_folder(tmp_path / "photos", per_class=3))
    np.testing.assert_array_equal(ds.x_train, ds.x_test)
    assert len(ds.x_train) == 6 and len(ds.x_val) == 0 and ds.x_val.shape[1:] == (32, 32, 3)
    assert "all 6 images are both the training and the test images" in ds.summary()
    assert ds.summary().startswith(f"image folder {tmp_path / 'photos'}: 2 classes (ant, bee)")


def test_a_corrupt_image_and_a_text_file_named_jpg_are_one_warning_line_each_and_counted(tmp_path, monkeypatch,
                                                                                          capsys):
    root = class_folder(tmp_path / "photos", per_class=2)
    whole = photo(tmp_path / "whole.jpg", COLOURS["ant"], (200, 150)).read_bytes()
    (root / "ant" / "cut.jpg").write_bytes(whole[:len(whole) // 3])
    (root / "bee" / "letter.jpg").write_text("Dear reader,\nthis is text.\n")
    warnings = []
    ds = data.load(root, warn=warnings.append)
    assert len(ds.x_train) == 4 and ds.unreadable == 2
    assert len(warnings) == 2 and all("\n" not in line for line in warnings)
    assert warnings[0].startswith(f"{root / 'ant' / 'cut.jpg'}: not a readable image")
    assert warnings[1] == f"{root / 'bee' / 'letter.jpg'}: not a readable image (no image format Pillow knows)"
    assert "2 unreadable images skipped" in ds.summary()
    monkeypatch.chdir(tmp_path)                                          # the same folder, named another way
    capsys.readouterr()
    again = []
    assert data.load("photos", warn=again.append).unreadable == 2        # from the cache: said again, as named now
    assert "decoding" not in capsys.readouterr().err
    assert again == [line.replace(str(root), "photos") for line in warnings]


def test_a_symlink_out_of_the_folder_is_not_followed_and_one_inside_is(tmp_path):
    root = class_folder(tmp_path / "photos", per_class=2)
    secret = photo(tmp_path / "elsewhere" / "secret.png", COLOURS["wasp"])
    (root / "ant" / "leak.png").symlink_to(secret)
    (root / "wasp").symlink_to(secret.parent, target_is_directory=True)    # a whole class folder outside
    (root / "bee" / "again.png").symlink_to(root / "bee" / "0.png")
    warnings = []
    ds = data.load(root, warn=warnings.append)
    assert ds.label_names == ("ant", "bee") and ds.outside == 2
    assert COLOURS["wasp"] not in [colour_of(x) for x in ds.x_train]
    assert ds.y_train.tolist() == [0, 0, 1, 1, 1]                        # bee/again.png stays inside: read
    assert warnings == [f"{root}: 2 symlinks lead out of the folder, not followed ({root / 'wasp'}, ...)"]


def test_a_second_load_comes_from_the_cache_and_a_changed_file_rewrites_it(tmp_path, cache):
    root = class_folder(tmp_path / "photos", per_class=2)
    notes = []
    first = folders.load(root, note=notes.append)
    assert len(notes) == 1 and "decoding 4 images to 32x32" in notes[0]
    assert len(list(cache.glob("*.npz"))) == 1
    second = folders.load(root, note=notes.append)
    assert len(notes) == 1                                               # nothing decoded
    np.testing.assert_array_equal(first.x_train, second.x_train)
    np.testing.assert_array_equal(first.y_train, second.y_train)
    assert first.fingerprint == second.fingerprint
    changed = photo(root / "ant" / "0.png", COLOURS["wasp"], (40, 36))
    os.utime(changed, ns=(10**18, 10**18))                               # a new modification time, whatever the clock
    third = folders.load(root, note=notes.append)
    assert len(notes) == 2 and colour_of(third.x_train[0]) == COLOURS["wasp"]
    folders.load(root, note=notes.append)
    assert len(notes) == 2 and len(list(cache.glob("*.npz"))) == 1      # rewritten in place, then read


def test_a_corrupt_or_foreign_cache_file_is_ignored_and_rewritten(tmp_path, cache):
    root = class_folder(tmp_path / "photos", per_class=2)
    expected = folders.load(root, note=lambda line: None)
    (path,) = cache.glob("*.npz")
    for foreign in (b"PK\x03\x04 not really a zip", np.lib.format.magic(1, 0) + b"junk"):
        path.write_bytes(foreign)
        notes = []
        ds = folders.load(root, note=notes.append)
        assert len(notes) == 1                                           # decoded again
        np.testing.assert_array_equal(ds.x_train, expected.x_train)
        folders.load(root, note=notes.append)
        assert len(notes) == 1                                           # and the rewritten cache is read


def test_a_cache_with_the_right_key_but_wrong_shapes_is_not_trusted(tmp_path, cache):
    root = class_folder(tmp_path / "photos", per_class=2)
    expected = folders.load(root, note=lambda line: None)
    (path,) = cache.glob("*.npz")
    with np.load(path) as z:
        arrays = dict(z)
    arrays["y"] = np.full_like(arrays["y"], 7)                           # a label no class has
    np.savez(path, **arrays)
    ds = folders.load(root, note=lambda line: None)
    np.testing.assert_array_equal(ds.y_train, expected.y_train)


def test_an_image_through_the_folder_has_the_pixels_edgecifar_predict_decodes(tmp_path):
    root = tmp_path / "photos"
    rng = np.random.default_rng(3)
    exif = Image.Exif()
    exif[0x0112] = 6                                                     # a phone photo stored sideways
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (90, 150, 3), np.uint8)).save(root / "a" / "phone.jpg", exif=exif)
    Image.fromarray(rng.integers(0, 256, (70, 50, 4), np.uint8), "RGBA").save(root / "b" / "alpha.png")
    ds = data.load(root)
    np.testing.assert_array_equal(ds.x_train[0], images.load_image(root / "a" / "phone.jpg"))   # predict's call
    np.testing.assert_array_equal(ds.x_train[1], images.load_image(root / "b" / "alpha.png"))


def test_a_folder_is_resized_to_the_size_asked_while_cifar_stays_32x32(tmp_path, synthetic_archive):
    root = tmp_path / "photos"
    bands = np.zeros((40, 120, 3), np.uint8)
    bands[:, :40, 0] = bands[:, 40:80, 1] = bands[:, 80:, 2] = 255       # red, green, blue thirds
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        Image.fromarray(bands).save(root / name / "bands.png")
    wide = data.load(root, size=(8, 24))                                 # the whole picture: 3:1
    assert wide.x_train.shape == (2, 8, 24, 3)
    assert wide.x_train[0, :, :8].tolist() == [[[255, 0, 0]] * 8] * 8
    assert wide.x_train[0, :, 16:].tolist() == [[[0, 0, 255]] * 8] * 8
    tall = data.load(root, size=(24, 8))                                 # a centered 13x40 box: green
    assert tall.x_train.shape == (2, 24, 8, 3) and np.all(tall.x_train == [0, 255, 0])
    assert np.all(data.load(root).x_train == [0, 255, 0])                # square: the centered 40x40
    assert data.load(synthetic_archive, size=(8, 24)).x_train.shape[1:] == (32, 32, 3)


@pytest.mark.parametrize("layout, message", [
    ({"ant/0.png": "ant"}, r"only one class folder with images \(ant\); a classifier needs at least 2 classes"),
    ({"loose.png": "ant"}, r"no class subfolders \(it holds 1 image file directly\)"),
    ({"ant/readme.txt": None, "bee/.hidden.png": "bee"}, "no image files in its class folders"),
    ({"train/ant/0.png": "ant", "train/bee/0.png": "bee", "extra/0.png": "ant"},
     r"mixes split folders \(train/\) with other folders \(extra\)"),
    ({"train/ant/0.png": "ant", "train/bee/0.png": "bee", "test/ant/0.png": "ant"},
     r"the splits hold different class folders \(test/ lacks bee\)"),
])
def test_a_folder_that_is_no_image_data_set_is_refused_in_one_line_naming_it(tmp_path, layout, message):
    root = tmp_path / "photos"
    root.mkdir()
    for rel, name in layout.items():
        if name is None:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text("text")
        else:
            photo(root / rel, COLOURS[name])
    with pytest.raises(DataError, match=f"^{re.escape(str(root))}: {message}") as caught:
        data.load(root)
    assert "\n" not in str(caught.value)


def test_a_cifar_folder_is_still_read_as_cifar(tmp_path):
    from conftest import synthetic_members

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, raw in synthetic_members().items():
        (folder / name).write_bytes(raw)
    for path in (tmp_path, folder):
        ds = data.load(path)
        assert isinstance(ds, data.Cifar10) and len(ds.x_train) == 400 and len(ds.x_val) == 0


def package_images() -> dict[str, list[Path]]:
    """Real images shipped by installed packages (no download): matplotlib's sample photos and its toolbar
    icons, two visibly different kinds of picture."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return {}
    mpl_data = Path(next(iter(spec.submodule_search_locations))) / "mpl-data"
    return {"samples": sorted((mpl_data / "sample_data").glob("*.[jp][pn]g")),
            "icons": sorted((mpl_data / "images").glob("*.png"))}


def test_a_real_foreign_dataset_of_package_images_loads_as_two_classes(tmp_path):
    shipped = package_images()
    if not all(len(files) >= 2 for files in shipped.values()) or not shipped:
        pytest.skip("matplotlib's sample_data and toolbar images are not installed")
    root = tmp_path / "foreign"
    for name, files in shipped.items():
        (root / name).mkdir(parents=True)
        for f in files:
            shutil.copy(f, root / name / f.name)
    warnings = []
    ds = data.load(root, size=(48, 48), warn=warnings.append)
    assert ds.label_names == ("icons", "samples")
    assert np.bincount(ds.y_train).tolist() == [len(shipped["icons"]), len(shipped["samples"])]
    assert ds.unreadable == 0 and not [w for w in warnings if "not a readable image" in w]
    hopper = [i for i, f in enumerate(sorted(shipped["samples"])) if f.name == "grace_hopper.jpg"]
    if hopper:
        index = len(shipped["icons"]) + hopper[0]
        np.testing.assert_array_equal(ds.x_train[index], images.load_image(root / "samples" / "grace_hopper.jpg",
                                                                           (48, 48)))
