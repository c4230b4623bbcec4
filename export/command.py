"""``edgecifar export [MODEL] [--int8 ...]``: the thin CLI over export.pipeline.

One flag per row of the format table, generated from it. Exit codes: 0 when every file was written
and runs (an accuracy drop above --threshold is a warning in the table, not a failure, unless
``--strict``), 1 when any format failed or, with ``--strict``, dropped more than the threshold or missed
``--max-drop`` (the files are still written: CI fails the build), 2 for bad input (one ``error:`` line from the
CLI group, nothing written). With ``--max-drop`` the full int8 file is judged by the budget, through the file
the search chose, not by ``--threshold``. A format the doctor (--explain, --max-drop) could not explain is an
``error:`` line and exit 1; its files stay written.
TensorFlow is imported only when the command runs.
"""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from edgecifar.contract import parse_range, read_labels
from edgecifar.export import doctor as doctor_limits
from edgecifar.export import tta as tta_kinds
from edgecifar.export.formats import FORMATS


def _format_flags(fn):
    """A boolean --FLAG for each format in the table, then a --FLAG-NAME for each of its options, so the
    table stays the only list of formats and of their settings. An option not given arrives as None, so
    that only the options given reach ExportConfig, which checks them (pipeline.check_options) and fills in
    the table's defaults."""
    for fmt in reversed(FORMATS):
        for opt in reversed(fmt.options):
            fn = click.option(fmt.option_flag(opt), fmt.option_key(opt), type=opt.type, default=opt.default,
                              show_default=True, callback=_given_or_none, help=f"{fmt.flag}: {opt.help}")(fn)
        fn = click.option(fmt.flag, fmt.key, is_flag=True, help=fmt.help)(fn)
    return fn


def _given_or_none(ctx: click.Context, param: click.Parameter, value):
    """The value if it was given (command line or environment), None if it is the default."""
    return None if ctx.get_parameter_source(param.name) is ParameterSource.DEFAULT else value


def _tta_kind(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A kind of export.tta.TTA, checked while the command line is parsed: an unknown one is one error line
    and exit 2 (click.Choice would print the usage block too)."""
    if value is not None:
        tta_kinds.get(value)
    return value


def _input_range(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, float] | None:
    """--input-range parsed as bench and predict parse it (edgecifar.contract), one line when malformed."""
    return parse_range(value) if value else None


def _labels(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    return read_labels(value) if value else None


def _format_options(values: dict) -> dict[str, dict]:
    """Pop the --FLAG-NAME values out of the command's keywords into {format key: {option name: value}},
    keeping only the options given (not None)."""
    given = {fmt.key: {opt.name: value for opt in fmt.options
                       if (value := values.pop(fmt.option_key(opt), None)) is not None}
             for fmt in FORMATS}
    return {key: opts for key, opts in given.items() if opts}


@click.command()
@click.argument("model", required=False, type=click.Path(path_type=Path))
@_format_flags
@click.option("--all", "everything", is_flag=True, help="Every format above.")
@click.option("--tta", is_flag=False, flag_value=tta_kinds.DEFAULT, default=None, callback=_tta_kind,
              metavar="[" + "|".join(tta_kinds.TTA) + "]",
              help="Export the model with test-time augmentation inside, its weights stored once. "
              + "; ".join(f"{k}{' (a bare --tta)' if k == tta_kinds.DEFAULT else ''}: {t.help}, {t.views}x the "
                          f"MACs, files NAME{t.suffix}_*" for k, t in tta_kinds.TTA.items()) + ".")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default: RUN_DIR/export/, next to the model).")
@click.option("--calibration", "n_calibration", type=int, default=None,
              help="Training images (outside the validation split) that calibrate the int8 formats (default 500, or "
                   "every one a smaller folder has).")
@click.option("--val-size", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Held-out training images every file is validated on against Keras.")
@click.option("--threshold", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Accuracy drop (points) above which a file is flagged.")
@click.option("--strict", is_flag=True, help="Exit 1 when any format drops more than --threshold, or no file meets "
                                            "--max-drop (for CI).")
@click.option("--data", type=click.Path(path_type=Path),
              help="cifar-10-python.tar.gz, cifar-10-batches-py/, or a folder of images: class subfolders (validated "
                   "against them), or loose images (calibration; validated by agreement with Keras). Default "
                   "$EDGECIFAR_DATA, else the run's data.")
@click.option("--input-range", metavar="LOW,HIGH", callback=_input_range,
              help="What the model expects for pixels 0 and 255 (e.g. 0,1 or -1,1) when it does not rescale inside: "
                   "the files then rescale raw pixels to it, and take pixels 0..255. Needed for a model made "
                   "elsewhere with no Rescaling or Normalization layer at its input.")
@click.option("--explain", is_flag=True,
              help="The quantization doctor's report of the int8 formats (--int8: TensorFlow's QuantizationDebugger; "
                   "--onnx-int8: onnxruntime's qdq_loss_debug): every layer ranked by what int8 does to its output "
                   f"(SQNR), and the accuracy when each of the worst {doctor_limits.TRIED} is kept in float; the "
                   f"top {doctor_limits.SHOWN} in a table, the whole report in --json.")
@click.option("--max-drop", type=click.FloatRange(min=0), metavar="POINTS",
              help="Write the cheapest TFLite file within POINTS of the Keras model on the validation images: full "
                   "int8 when it is; else NAME_mixed_int8.tflite, the fewest layers kept in float (chosen from the "
                   "doctor's report, greedily by the accuracy each recovers), or when no layers do it, the fewest "
                   "first operators (a float prefix). With --strict, exit 1 when no file meets it. Needs --int8.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the doctor's whole report (--explain, --max-drop) as JSON.")
@click.option("--labels", metavar="FILE", callback=_labels,
              help="The model's class names, one per line in output order, written into every file (default: the "
                   "run's, the --data folder's class folders, CIFAR-10's for 10 classes, else numbered).")
def export(model: Path | None, everything: bool, tta: str | None, out: Path | None, n_calibration: int, val_size: int,
           threshold: float, strict: bool, data: Path | None, input_range: tuple[float, float] | None,
           labels: tuple[str, ...] | None, explain: bool, max_drop: float | None, json_out: Path | None,
           **flags: bool) -> None:
    """Convert MODEL (a run directory, a .keras or .h5 file, or a SavedModel folder: any Keras image classifier;
    default: the newest run) to TFLite/ONNX files that take raw pixels 0..255, validate each one in its device
    runtime against Keras, and write edgecifar.json beside them. No format flag means --fp32."""
    from rich.console import Console

    from edgecifar.errors import EdgeCifarError, require_tensorflow
    from edgecifar.fileio import check_writable_file, try_write, write_json
    from edgecifar.export import formats, pipeline, report, source
    from edgecifar.export.validate import AGREEMENT, DROP
    from edgecifar.tables import output_console

    options = _format_options(flags)
    if json_out is not None and not (explain or max_drop is not None):
        raise EdgeCifarError(f"--json {json_out}: the report it writes is --explain's or --max-drop's: add one")
    src = source.resolve(model, tta)
    chosen = formats.select(flags, everything)
    cfg = pipeline.ExportConfig(src, chosen, out=out, data=str(data) if data else None, val_size=val_size,
                                n_calibration=n_calibration, threshold=threshold, options=options,
                                input_range=input_range, labels=labels, explain=explain, max_drop=max_drop)
    if json_out is not None:
        check_writable_file(json_out, "--json")  # before minutes of conversion, not after
    require_tensorflow()
    err = Console(stderr=True)
    result = pipeline.run(cfg, say=lambda msg: err.print(msg, highlight=False, soft_wrap=True))
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    console = output_console()  # piped or captured: never folded
    console.print(report.table(result, threshold))
    diagnosis = result.diagnosis
    for explanation in diagnosis.explanations if diagnosis and explain else ():
        console.print(report.offenders(explanation))
    search = diagnosis.search if diagnosis else None
    if search is not None:
        console.print(report.search_line(search, result), highlight=False, soft_wrap=True)
    unwritten = try_write("--json", json_out, lambda path: write_json(path, {
        "model": str(src.path), "name": result.name, "out": str(result.out), "measure": result.measure,
        "keras_accuracy": result.keras_accuracy, "images": result.images, **diagnosis.to_dict()})) \
        if json_out is not None and diagnosis is not None else None
    for o in result.failed:
        click.echo(f"error: {o.fmt.title} ({o.path.name}) failed: {o.validation.error}", err=True)
    judged_by_budget = {"int8", formats.MIXED.key} if search is not None else set()  # --max-drop's files
    dropped = [o for o in result.outcomes if o.validation.status == DROP and o.fmt.key not in judged_by_budget] \
        if strict else []
    for o in dropped:
        how = (f"disagrees with Keras on {o.validation.drop:.2f}% of the images" if o.validation.measure == AGREEMENT
               else f"is {o.validation.drop:.2f} points less accurate than Keras")
        click.echo(f"error: {o.fmt.title} ({o.path.name}) {how}, more than --threshold {threshold:g} (--strict)",
                   err=True)
    missed = strict and search is not None and not search.met
    if missed:
        click.echo(f"error: --max-drop {search.budget:g}: no file within {search.budget:g} points of the Keras model "
                   f"(full int8 drops {search.full.drop:.2f}; {len(search.trials)} files tried) "
                   "(--strict)", err=True)
    doctor_failures = diagnosis.failures if diagnosis else []
    for failure in doctor_failures:   # the doctor could not explain a format: the files stay written
        click.echo(f"error: {failure}", err=True)
    if unwritten:
        click.echo(f"error: {unwritten}", err=True)
    if result.failed or dropped or missed or unwritten or doctor_failures:
        raise SystemExit(1)
