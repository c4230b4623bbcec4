"""``edgecifar bench``: accuracy, latency, throughput, size and memory of exported files, one process each."""

from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path

import click
import numpy as np

from edgecifar.bench.devices import DEVICES, click_options
from edgecifar.contract import click_options as contract_options


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--device", default="cpu", show_default=True, help=" | ".join(d.usage for d in DEVICES.values()))
@click.option("--threads", default="1", show_default=True, help="Thread counts, comma-separated: one row each.")
@click.option("--runs", type=click.IntRange(1), default=200, show_default=True, help="Timed batch-1 runs.")
@click.option("--warmup", type=click.IntRange(0), default=20, show_default=True, help="Untimed runs first.")
@click.option("--blocks", type=click.IntRange(1), default=5, show_default=True,
              help="Latency = median of the medians of this many consecutive blocks of runs.")
@click.option("--batch", type=click.IntRange(1), default=32, show_default=True, help="Batch for throughput.")
@click.option("--rounds", type=click.IntRange(1), default=1, show_default=True,
              help="Measure the whole list this many times, round-robin, so a drifting machine slows every file "
                   "alike; latency = median of the round medians, spread = their min–max; accuracy in round 1.")
@click.option("--reference", type=click.Path(path_type=Path), default=None,
              help="One of the benched files (its path, or its name if no other file has it): every row gets "
                   "its latency as a fraction of this file's (\"× ref\": the median over rounds of the ratio in "
                   "the same round).")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Use the first N test images (default: all; " + "; ".join(
                  f"{d.default_images:,} on {d.scheme}" for d in DEVICES.values() if d.default_images) + ").")
@click.option("--data", default=None, help="CIFAR-10 archive or folder (default: $EDGECIFAR_DATA, Keras' cache).")
@click.option("--runtime", type=click.Choice(["auto", "litert", "tflite-runtime"]), default="auto",
              show_default=True, help="TFLite interpreter (ONNX files always use onnxruntime).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write rows as JSON.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False, path_type=Path), help="Write rows as CSV.")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the table as Markdown.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG: accuracy against median latency with the Pareto front.")
@click.option("--confusion", "confusion_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for one confusion-matrix PNG per file; prints the most confused pairs.")
@contract_options
@click_options
@click.option("--timeout", type=click.FloatRange(1), default=900, show_default=True, help="Seconds per row.")
@click.pass_context
def bench(ctx, paths, device, threads, runs, warmup, blocks, batch, rounds, reference, limit, data, runtime, json_out,
          csv_out, md_out, plot_out, confusion_dir, timeout, input_range, labels, **device_options):
    """Benchmark model files (or folders of them) on a device: top-1 with a 95% interval, batch-1 latency
    (median of block medians, with its spread, p90, p99), throughput, load time, peak memory.

    Default PATHs: the shipped models plus the newest runs/*/export/ folder. Every file runs in its own
    process; a bad file gets an error row and the others still run (exit code 1 when any row failed).
    """
    from edgecifar import data as cifar
    from edgecifar.bench import core, report
    from edgecifar.bench.devices import Job, open_device
    from edgecifar.bench.stats import block_count
    from edgecifar.fileio import write_text
    from edgecifar.runs import git_commit, runs_root
    from edgecifar.tables import output_console
    from edgecifar.units import plural

    outputs = {"--json": json_out, "--csv": csv_out, "--markdown": md_out, "--plot": plot_out}
    _check_outputs(outputs, confusion_dir)
    thread_list = core.parse_threads(threads)
    files = core.expand(paths) if paths else core.expand(core.default_paths(runs_root()))
    dev = open_device(device, **device_options)  # each device takes its own options (devices.DEVICES)
    plan = dev.plan(files, thread_list, named=bool(paths))  # by default, only what it runs; the rest in a line
    files, thread_list = plan.files, plan.threads
    for line in plan.skipped:
        click.echo(f"bench: {line}", err=True)
    moot = [flag for flag, given in (("--rounds", rounds > 1), ("--reference", reference is not None)) if given]
    if moot and not dev.timed:  # nothing timed: more rounds would only repeat the first, and no ratio exists
        click.echo(f"bench: {' and '.join(moot)} ignored: {dev.name} measures no latency", err=True)
        rounds, reference = 1, None
    if reference is not None:
        reference = core.find_reference(files, reference)
    dataset = cifar.load(data, size=_photo_size(files))
    n = min(limit or dev.default_images or len(dataset.y_test), len(dataset.y_test))
    images, y = dataset.x_test[:n], dataset.y_test[:n]

    console = output_console()
    blocks = block_count(runs, blocks)  # what the worker splits the runs into: the figures say what ran
    timing = (f"; {plural(runs, 'run')} in {plural(blocks, 'block')} after {warmup} warm-up" if dev.timed
              else "; not timed") + (f"; {rounds} rounds, round-robin" if rounds > 1 else "")
    click.echo(f"bench: {plural(len(files), 'file')} x threads {','.join(map(str, thread_list))} on {dev.name}; "
               f"{plural(n, 'test image')} from {dataset.source}{timing}", err=True)

    def progress(row, round_no):
        state = "ok" if row["status"] == "ok" else f"error: {row['error']}"
        where = f"round {round_no}/{rounds}: " if rounds > 1 else ""
        click.echo(f"  {where}{row['file']} ({plural(row['threads'], 'thread')}): {state}", err=True)

    job = Job(file=Path(), images=Path(), runs=runs, warmup=warmup, blocks=blocks, batch=batch, runtime=runtime,
              timeout=timeout)
    rows = core.run_bench(files, images, y, dev, thread_list, job, on_row=progress, rounds=rounds,
                          reference=reference, data_labels=tuple(dataset.label_names), model_labels=labels,
                          input_range=input_range)

    facts = _device_facts(dev, rows)
    rows = core.check_recorded_accuracy(rows, Path(dataset.source).name, dataset.fingerprint, _where(dev, facts))

    shown = report.view(dev.scheme)
    console.print(shown.table(rows, f"edgecifar bench on {dev.name} ({plural(n, 'test image')})"))
    legend = shown.legend(runs, blocks, rounds) + ([report.reference_legend(reference.name)] if reference else [])
    for line in legend:
        console.print(line, highlight=False)
    notes = {r["note"] for r in rows if r.get("note")}
    for note in sorted(notes):
        console.print(f"note: {note}", highlight=False)

    meta = {"device": dev.name, "threads": thread_list, "runs": runs, "warmup": warmup, "blocks": blocks,
            "rounds": rounds, "reference": str(reference) if reference else None, "batch": batch,
            "runtime": runtime, "images": n, "data": Path(dataset.source).name,
            "data_fingerprint": dataset.fingerprint, "host": platform.node(), "machine": platform.machine(),
            "python": platform.python_version(), **facts, "commit": git_commit(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    title = f"CIFAR-10 ({plural(n, 'test image')}) on {dev.name}"
    writers = {"--json": lambda path: report.write_json_report(path, rows, meta),
               "--csv": lambda path: report.write_csv_report(path, rows),
               "--markdown": lambda path: write_text(path, shown.markdown(rows, meta)),
               "--plot": lambda path: _pareto_plot(rows, path, title),
               "--confusion": lambda folder: _confusions(rows, y, dataset.label_names, folder, console)}
    unwritten = _write_outputs({**outputs, "--confusion": confusion_dir}, writers)

    for problem in unwritten:   # after the table: what was measured is on the screen, only a file is missing
        click.echo(f"error: {problem}", err=True)
    mismatched = [r for r in rows if r["status"] == core.MISMATCH]
    if mismatched:
        click.echo(f"{len(mismatched)} of {plural(len(rows), 'row')} scored outside the accuracy their "
                   f"{core.MANIFEST} records for the same images", err=True)
    failed = [r for r in rows if not core.measured(r)]
    if failed:
        click.echo(f"{len(failed)} of {plural(len(rows), 'row')} failed", err=True)
    if unwritten or mismatched or failed:
        ctx.exit(1)


def _check_outputs(outputs: dict, confusion_dir: Path | None) -> None:
    """Every output can be written, before a file is read or a worker started: a measurement that ends in a
    traceback over an unwritable --json is minutes lost. (A write can still fail later, on a full disk.)"""
    from edgecifar.fileio import check_writable_dir, check_writable_file

    _check_outputs_differ(outputs)
    for flag, path in outputs.items():
        if path is not None:
            check_writable_file(path, flag)
    if confusion_dir is not None:
        check_writable_dir(confusion_dir, "--confusion")
    if outputs["--plot"] is not None or confusion_dir is not None:
        from edgecifar.bench.plot import require_matplotlib

        require_matplotlib()


def _check_outputs_differ(outputs: dict) -> None:
    """One run never writes two of its outputs to the same file (the second would replace the first)."""
    from edgecifar.errors import EdgeCifarError
    from edgecifar.fileio import resolved

    seen: dict[Path, str] = {}
    for flag, path in outputs.items():
        if path is None:
            continue
        key = resolved(path)
        if key in seen:
            raise EdgeCifarError(f"{path}: named by both {seen[key]} and {flag}; give each its own file")
        seen[key] = flag


def _write_outputs(outputs: dict, writers: dict) -> list[str]:
    """Each output given, written by its writer; the one-line reasons of those that could not be (a full disk),
    reported after the table: what was measured is on the screen, only a file is missing."""
    from edgecifar.fileio import try_write

    problems = []
    for flag, path in outputs.items():
        if path is None:
            continue
        problem = try_write(flag, path, writers[flag])
        if problem:
            problems.append(problem)
        elif flag != "--confusion":   # the matrices name their own files
            click.echo(f"wrote {path}", err=True)
    return problems


def _pareto_plot(rows: list[dict], path: Path, title: str) -> None:
    from edgecifar.bench.plot import pareto_plot

    pareto_plot(rows, path, title=title)


def _device_facts(dev, rows) -> dict:
    """What decides the figures besides the file: the device's CPU model, its CPU features (int8 kernels and
    so accuracy differ between AVX2 and AVX-512 VNNI machines) and its runtimes' versions (as its worker
    reported them; this machine's for the local device; None where unknown)."""
    from edgecifar.host import cpu_features, cpu_model

    local = dev.host_runtimes   # it runs here, on this CPU: this machine's facts are its
    cpu = next((r["cpu"] for r in rows if r.get("cpu")), None) or (cpu_model() if local else None)
    features = next((r["cpu_features"] for r in rows if r.get("cpu_features") is not None), None)
    if features is None and local:
        features = list(cpu_features())
    versions = next((r["versions"] for r in rows if r.get("versions")), None)
    return {"cpu": cpu, "cpu_features": features, "versions": versions}


def _where(dev, facts: dict) -> str:
    """The machine a row ran on, as a mismatch with a manifest names it: its CPU features when known."""
    from edgecifar.host import FEATURES

    features = facts.get("cpu_features")
    if features is None:
        return f"on {dev.name}, CPU features unknown"
    return f"on {dev.name}, CPU features: {', '.join(features) or 'none of ' + ', '.join(FEATURES)}"


def _photo_size(files: list[tuple[Path, str | None]]) -> tuple[int, int]:
    """The size to decode a photo folder at (``--data FOLDER``): the largest input among the files, read without
    running them; each worker then fits the images to its own file. CIFAR-10 stays 32x32 whatever this says."""
    from edgecifar.contract import peek

    sizes = [(c.height, c.width) for path, problem in files if not problem and (c := peek(path)) is not None]
    return max(sizes, key=lambda hw: hw[0] * hw[1]) if sizes else (224, 224)


def _confusions(rows, labels, names, folder: Path, console) -> None:
    """One PNG per file (its first successful row) and its most confused class pairs. Files that share a
    name are told apart by their folders (report.display_names), so no matrix replaces another."""
    import re

    from edgecifar.bench.core import measured
    from edgecifar.bench.plot import confusion_png
    from edgecifar.bench.report import display_names
    from edgecifar.metrics import confusion_matrix, most_confused
    from edgecifar.units import percent, plural

    shown = dict(zip((r["file"] for r in rows), display_names(rows)))
    done: set[str] = set()
    written: set[str] = set()
    for r in rows:
        if not measured(r) or r["file"] in done or r.get("predictions") is None:
            continue
        done.add(r["file"])
        predicted = np.asarray(r["predictions"])
        known = predicted >= 0   # -1: a class of the model's that the data lacks (wrong, outside the matrix)
        matrix = confusion_matrix(predicted[known], labels[:len(predicted)][known], n_classes=len(names))
        name = shown[r["file"]]
        stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name)
        png, copy = stem, 2
        while png in written:  # two names that differ only in punctuation
            png, copy = f"{stem}-{copy}", copy + 1
        written.add(png)
        out = confusion_png(matrix, tuple(names), folder / f"{png}.png",
                            f"{name}: {percent(r['accuracy'])} of {plural(r['images'], 'test image')}")
        pairs = ", ".join(f"{a}/{b} {k}" for a, b, k in most_confused(matrix, tuple(names), 3))
        console.print(f"{name}: most confused {pairs or '(none)'} -> {out}", highlight=False)
    if not done:
        console.print("--confusion: no successful row with per-image predictions; no matrix written", highlight=False)
