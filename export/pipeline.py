"""One export call: check every input first, then write, validate and record each format in turn.

All input errors (format options, model, data, calibration, output folder) are raised before the first
file is written, the format options as soon as the ExportConfig is made. After that a format that fails
is reported and the others still go on. Each file is written under a temporary name, validated there,
and renamed only if it loads and runs: a failed format leaves nothing behind (an older file of the same
name stays, with its manifest entry). A killed export leaves its temporary: the next export into the folder
deletes it (only once its writer is dead: see fileio.remove_stale_temporaries).

``--explain`` and ``--max-drop`` run the quantization doctor (export/doctor.py) once the formats are written: its
report, and the mixed int8 file it chose as one more format row (formats.MIXED), written, validated and recorded
the same way, with its latency and the full int8 file's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgecifar import data as cifar
from edgecifar import micro
from edgecifar.contract import Contract
from edgecifar.errors import EdgeCifarError, one_line
from edgecifar.export import adapt, calibration, dataset, doctor, manifest, tflite, tta
from edgecifar.export.formats import DERIVED, FORMATS, MIXED, Format
from edgecifar.export.job import ExportJob
from edgecifar.export.source import Source, describe, digest, load_model
from edgecifar.export.validate import (ACCURACY, AGREEMENT, FAILED, Validation, failed, keras_scores, latency_ms,
                                       micro_check, validate)
from edgecifar.fileio import atomic_path, check_writable_dir, remove_stale_temporaries
from edgecifar.manifest import read as read_manifest
from edgecifar.metrics import accuracy


@dataclass
class ExportConfig:
    source: Source
    formats: list[Format]
    out: Path | None = None
    data: str | None = None
    val_size: int = 2000
    n_calibration: int | None = None     # None: calibration.DEFAULT_CALIBRATION, or fewer on a small folder
    threshold: float = 1.0
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # format key -> {option name: value}
    input_range: tuple[float, float] | None = None   # --input-range: what the model expects for pixels 0 and 255
    labels: tuple[str, ...] | None = None            # --labels: the model's class names in output order
    explain: bool = False                            # --explain: the doctor's per-layer report of the int8 formats
    max_drop: float | None = None                    # --max-drop: the cheapest TFLite file within these points

    def __post_init__(self) -> None:
        check_options(self.options, self.formats)
        check_doctor(self.explain, self.max_drop, self.formats, self.options)

    def options_of(self, fmt: Format) -> dict[str, Any]:
        """Every option ``fmt`` declares, with its value: given, else the table's default."""
        given = self.options.get(fmt.key, {})
        return {o.name: given.get(o.name, o.default) for o in fmt.options}


def check_options(options: dict[str, dict[str, Any]], chosen: list[Format]) -> None:
    """The one check of format options, for the CLI and the API alike: each given option belongs to a chosen
    format, is one that format declares (export/formats.py ``Option``) and has its type and range.
    An EdgeCifarError (exit 2, one line) before anything is read or written."""
    by_key = {f.key: f for f in FORMATS}
    chosen_keys = {f.key for f in chosen}
    for key, given in options.items():
        fmt = by_key.get(key)
        if fmt is None:
            raise EdgeCifarError(f"options for an unknown export format {key!r}; known: {', '.join(by_key)}")
        declared = {o.name: o for o in fmt.options}
        for name, value in given.items():
            opt = declared.get(name)
            if opt is None:
                raise EdgeCifarError(f"{fmt.flag} has no option {name!r}; it takes: {', '.join(declared) or 'none'}")
            flag = fmt.option_flag(opt)
            if key not in chosen_keys:
                raise EdgeCifarError(f"{flag} {value} is an option of {fmt.flag}, which was not given: "
                                     f"add {fmt.flag} or drop {flag}")
            if not isinstance(value, opt.type) or (isinstance(value, bool) and opt.type is not bool):
                raise EdgeCifarError(f"{flag} {value!r}: expected {opt.type.__name__}")
            if opt.min is not None and value < opt.min:
                raise EdgeCifarError(f"{flag} {value}: expected {opt.min} or more")


def check_doctor(explain: bool, max_drop: float | None, chosen: list[Format], options: dict[str, dict]) -> None:
    """The doctor's flags need a format it explains: --explain an int8 format (--int8, --onnx-int8), --max-drop
    --int8 (it writes a TFLite file) without --int8-float-ops (a float prefix the user chose, not the doctor). One
    EdgeCifarError line before anything is read."""
    keys = {f.key for f in chosen}
    if explain and not keys & set(doctor.DOCTORS):
        raise EdgeCifarError("--explain reports on an int8 format: add --int8 (or --onnx-int8)")
    if max_drop is not None and "int8" not in keys:
        raise EdgeCifarError(f"--max-drop {max_drop:g} searches from the full int8 TFLite file: add --int8")
    if (explain or max_drop is not None) and options.get("int8", {}).get("float_ops"):
        flag = "--max-drop" if max_drop is not None else "--explain"
        raise EdgeCifarError(f"{flag} starts from the full int8 file, which --int8-float-ops changes: give one of them")


@dataclass
class Outcome:
    """One format's result: the file (None when it failed) and its validation."""

    fmt: Format
    path: Path
    validation: Validation
    written: bool
    micro: dict | None = None   # TensorFlow Lite Micro's verdict, for the files a microcontroller runs
    loaded: object | None = None      # the file as its runtime loaded it (the manifest reads its quantization)
    latency_ms: float | None = None   # measured for the doctor's comparison (validate.latency_ms)
    note: str | None = None           # what the table says after its status (the layers a mixed file keeps)


@dataclass
class Report:
    name: str
    out: Path
    keras_accuracy: float | None      # None when validated by agreement with Keras (no labels)
    images: int
    outcomes: list[Outcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    measure: str = ACCURACY           # validate.ACCURACY, or validate.AGREEMENT
    reference: str = "model.keras"    # the Keras model's row in the table
    diagnosis: doctor.Diagnosis | None = None   # --explain / --max-drop

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.validation.status == FAILED]


def data_path(cfg: ExportConfig) -> str | None:
    """--data, else $EDGECIFAR_DATA, else the data the run trained on (if still there), else the usual places."""
    if cfg.data:
        return cfg.data
    if os.environ.get(cifar.ENV_VAR):
        return None
    trained_on = cfg.source.data_source
    return trained_on if trained_on and Path(trained_on).exists() else None


def run(cfg: ExportConfig, say: Callable[[str], None] = lambda _: None) -> Report:
    """Export ``cfg.formats`` of ``cfg.source`` into ``cfg.out`` and return what happened."""
    out = Path(cfg.out) if cfg.out else cfg.source.run_dir / "export"
    created = not out.exists()
    check_writable_dir(out, "--out" if cfg.out else None)
    for stale in remove_stale_temporaries(out, is_export_output):
        say(f"removed {stale.name}: a temporary left by an export that was killed")
    try:
        return _run(cfg, out, say)
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # an error before the first file: leave no trace, not even the folder


def is_export_output(name: str) -> bool:
    """Whether an export may write a file called ``name``: a format's ``{model}_{precision}{suffix}`` or the
    manifest. Only these files' temporaries are an export's to clean up in a folder it shares with others."""
    return name == manifest.MANIFEST or any(name.endswith(f"_{f.precision}{f.suffix}") for f in FORMATS + DERIVED)


def _run(cfg: ExportConfig, out: Path, say: Callable[[str], None]) -> Report:
    model, spec = load_model(cfg.source)
    where = str(cfg.source.path)
    pixel_range = adapt.input_range(cfg.input_range, spec, where, say)
    ds = dataset.load(data_path(cfg), (spec.height, spec.width), say)
    labels, named_by = dataset.choose_labels(cfg.labels, cfg.source.labels, spec.classes, ds)
    if not spec.ours:
        say(f"{where}: {spec.height}x{spec.width}x{spec.channels} in, {spec.classes} classes, "
            + (f"names from {named_by}" if labels else "numbered (--labels FILE names them)"))
    targets = dataset.targets(labels, ds, where)
    if targets.note:
        say(targets.note)
    calibrated = any(f.calibrated for f in cfg.formats)
    fit = Contract(*spec.shape).fit
    split = calibration.split(ds, cfg.val_size, cfg.n_calibration if calibrated else calibration.MIN_CALIBRATION,
                              cfg.source.holdout, fit=fit)
    y_val = targets.labels(split.y_val)
    if split.note and calibrated:
        say(split.note)
    warnings = []
    if cfg.source.data_fingerprint and cfg.source.data_fingerprint != ds.fingerprint:
        warnings.append(f"data {ds.source} (fingerprint {ds.fingerprint}) is not the data the model trained on "
                        f"({cfg.source.data_fingerprint}): validation images may include training images")
    if len(split.y_val) < cfg.val_size:
        warnings.append(f"only {len(split.y_val)} held-out images to validate on (--val-size {cfg.val_size})")

    model = adapt.prepare(model, spec, pixel_range, split.x_val, cfg.source.tta, where, say)
    say(f"{cfg.source.path}: Keras reference on {len(split.y_val):,} validation images")
    # A TTA model feeds the network several views per image: keep the images per call constant (500 at 128x128
    # and six views took 22 GB and was killed).
    reference = keras_scores(model, split.x_val, batch=max(1, 500 // cfg.source.views))
    job = ExportJob(model, cfg.source.name, split.calibration, labels, shape=spec.shape, classes=spec.classes)
    source = describe(cfg.source, model, digest(cfg.source.path))
    measure = ACCURACY if y_val is not None else AGREEMENT
    report = Report(job.name, out, accuracy(reference, y_val) if y_val is not None else None, len(split.y_val),
                    warnings=warnings, measure=measure, reference=cfg.source.path.name)
    entries = []
    for fmt in cfg.formats:
        say(f"{fmt.title}: writing {out / fmt.filename(job.name)}")
        options = cfg.options_of(fmt)
        outcome, loaded = _export_one(fmt, job, out, split.x_val, y_val, reference, cfg.threshold,
                                      tta.network_options(options, cfg.source.tta))
        report.outcomes.append(outcome)
        if outcome.written and runs_on_mcu(fmt):
            say(f"{fmt.title}: checking {outcome.path.name} in TensorFlow Lite Micro")
            outcome.micro = micro_check(outcome.path)
        if outcome.written:
            entry = manifest.file_entry(fmt, outcome.path, job, source, outcome.validation, loaded, options)
            entries.append({**entry, "micro": outcome.micro} if outcome.micro else entry)

    doctor_summary = None
    if cfg.explain or cfg.max_drop is not None:
        report.diagnosis = _diagnose(cfg, job, out, split.x_val, y_val, reference, report, say)
        doctor_summary = _record_doctor(report, job, source, entries)

    old = read_manifest(out)
    # The data by name and fingerprint, not by path: manifests ship to other machines.
    data_id = {"data": Path(ds.source).name, "data_fingerprint": ds.fingerprint}
    head = manifest.header(
        source,
        {"images": len(split.calibration), "seed": calibration.SEED, **data_id} if calibrated
        else (old or {}).get("calibration"),
        {"images": report.images, "split": split.how, "holdout": split.holdout, "seed": calibration.SEED, **data_id,
         "measure": measure, "keras_accuracy": report.keras_accuracy})
    if doctor_summary:
        head["max_drop"] = doctor_summary
    if entries:
        try:
            manifest.write(out, manifest.merge(old, head, entries, out))
        except OSError as exc:
            raise EdgeCifarError(f"{out / manifest.MANIFEST}: cannot write the manifest "
                                 f"({exc.strerror or exc}); the model files were written") from None
    return report


def _diagnose(cfg: ExportConfig, job: ExportJob, out: Path, images: np.ndarray, labels: np.ndarray | None,
              reference: np.ndarray, report: Report, say: Callable[[str], None]) -> doctor.Diagnosis:
    """The doctor on the int8 formats written (--max-drop: TFLite's only, unless --explain), then the file it
    chose written as the mixed int8 row, with its latency and the full int8 file's."""
    written = {o.fmt.key: o for o in report.outcomes if o.written}
    full = written["int8"].validation if "int8" in written else None
    if not cfg.explain and cfg.max_drop is not None and full is not None and full.drop is not None \
            and full.drop <= cfg.max_drop:   # the answer is the file written: no statistics needed
        say(f"--max-drop {cfg.max_drop:g}: full int8 drops {full.drop:.2f} points, within it")
        return doctor.Diagnosis(search=doctor.Search(cfg.max_drop, full))
    keys = [key for key in doctor.DOCTORS if key in written and (cfg.explain or key == "int8")]
    diagnosis = doctor.diagnose(job, keys, {key: written[key].path.name for key in keys}, images, labels, reference,
                                cfg.threshold, cfg.max_drop if "int8" in written else None, say, full)
    if cfg.max_drop is not None and "int8" not in written:
        diagnosis.failures.append(f"--max-drop {cfg.max_drop:g}: the int8 file failed, so there is nothing to "
                                  "search from")
    if diagnosis.mixed is None:
        return diagnosis
    job.cache[tflite.MIXED_CACHE] = diagnosis.mixed
    say(f"{MIXED.title}: writing {out / MIXED.filename(job.name)}")
    outcome, loaded = _export_one(MIXED, job, out, images, labels, reference, cfg.threshold, {})
    outcome.loaded = loaded
    report.outcomes.append(outcome)
    if outcome.written:
        say(f"{MIXED.title}: timing it and {written['int8'].path.name} (1 thread, batch 1)")
        for o in (written["int8"], outcome):
            o.latency_ms = latency_ms(o.path, images[0])
        outcome.note = f"keeps {diagnosis.kept_phrase()} in float"
    return diagnosis


def _record_doctor(report: Report, job: ExportJob, source: dict, entries: list[dict]) -> dict | None:
    """The manifest's part of the doctor's work: the mixed file's entry (its layers kept in float, and its accuracy,
    size and latency against full int8), the int8 entry's latency, and the search's summary for the header."""
    diagnosis = report.diagnosis
    if diagnosis is None or diagnosis.search is None:
        return None
    by_file = {e["file"]: e for e in entries}
    int8 = next(o for o in report.outcomes if o.fmt.key == "int8")
    mixed = next((o for o in report.outcomes if o.fmt is MIXED and o.written), None)
    if int8.latency_ms is not None and int8.path.name in by_file:
        by_file[int8.path.name]["latency_ms"] = int8.latency_ms
    if mixed is not None:
        entry = manifest.file_entry(MIXED, mixed.path, job, source, mixed.validation, mixed.loaded)
        entries.append({**entry, "latency_ms": mixed.latency_ms,
                        "kept_in_float": diagnosis.kept_names,
                        "kept_tensors": [layer.tensor for layer in diagnosis.kept_layers],
                        "float_prefix_ops": diagnosis.float_prefix, "max_drop": diagnosis.search.budget,
                        "against_int8": {"file": int8.path.name, "bytes": int8.path.stat().st_size,
                                         "accuracy": int8.validation.accuracy, "drop": int8.validation.drop,
                                         "latency_ms": int8.latency_ms}})
    search = diagnosis.search
    return {"budget": search.budget, "met": search.met,
            "chosen": mixed.path.name if mixed is not None else int8.path.name,
            "kept_in_float": diagnosis.kept_names, "float_prefix_ops": diagnosis.float_prefix,
            "full_int8_drop": search.full.drop, "files_tried": len(search.trials)}


def runs_on_mcu(fmt: Format) -> bool:
    """The formats a microcontroller runs (full-integer .tflite), as :mod:`edgecifar.micro` defines them."""
    return micro.runs_format(fmt.suffix, fmt.precision)


def _export_one(fmt: Format, job: ExportJob, out: Path, images: np.ndarray, labels: np.ndarray | None,
                reference: np.ndarray, threshold: float, options: dict[str, Any]):
    """Write one format to a temporary name, validate it there (against ``labels``, or by agreement with Keras
    when there are none), rename it only if it runs."""
    final = out / fmt.filename(job.name)
    loaded = None
    try:
        with atomic_path(final) as tmp:
            fmt.write(job, tmp, **options)
            result, loaded = validate(tmp, images, labels, reference, threshold)
            if result.status == FAILED:
                result.error = (result.error or "").replace(str(tmp), final.name)
                raise _Rejected(result)
    except _Rejected as rejected:
        return Outcome(fmt, final, rejected.result, False), None
    except Exception as exc:  # a converter fault fails this format only
        keras_acc = accuracy(reference, labels) if labels is not None else None
        return Outcome(fmt, final, failed(len(images), keras_acc, one_line(exc),
                                          ACCURACY if labels is not None else AGREEMENT), False), None
    return Outcome(fmt, final, result, True), loaded


class _Rejected(Exception):
    def __init__(self, result: Validation):
        super().__init__(result.error)
        self.result = result
