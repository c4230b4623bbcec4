"""``edgecifar bench``: accuracy, latency, throughput, size and memory of exported files, one process each."""

from __future__ import annotations

import datetime as _dt
import platform
import sys
from pathlib import Path

import click


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--device", default="cpu", show_default=True,
              help="cpu | ssh://user@host[:port] | android[:SERIAL]")
@click.option("--threads", default="1", show_default=True, help="Thread counts, comma-separated: one row each.")
@click.option("--runs", type=click.IntRange(1), default=200, show_default=True, help="Timed batch-1 runs.")
@click.option("--warmup", type=click.IntRange(0), default=20, show_default=True, help="Untimed runs first.")
@click.option("--blocks", type=click.IntRange(1), default=5, show_default=True,
              help="Latency = median of the medians of this many consecutive blocks of runs.")
@click.option("--batch", type=click.IntRange(1), default=32, show_default=True, help="Batch for throughput.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Use the first N test images.")
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
@click.option("--ssh-key", type=click.Path(exists=True, dir_okay=False), default=None, help="Private key for ssh://.")
@click.option("--ssh-known-hosts", default=None, help="known_hosts file for ssh:// (default: ssh's own).")
@click.option("--remote-python", default="python3", show_default=True,
              help="Python on the ssh board that has edgecifar (base install) on its path.")
@click.option("--benchmark-binary", type=click.Path(dir_okay=False), default=None,
              help="TensorFlow Lite's benchmark_model built for the phone (android devices).")
@click.option("--timeout", type=click.FloatRange(1), default=900, show_default=True, help="Seconds per row.")
@click.pass_context
def bench(ctx, paths, device, threads, runs, warmup, blocks, batch, limit, data, runtime, json_out, csv_out, md_out,
          plot_out, confusion_dir, ssh_key, ssh_known_hosts, remote_python, benchmark_binary, timeout):
    """Benchmark model files (or folders of them) on a device: top-1 with a 95% interval, batch-1 latency
    (median of block medians, with its spread, p90, p99), throughput, load time, peak memory.

    Default PATHs: the shipped models plus the newest runs/*/export/ folder. Every file runs in its own
    process; a bad file gets an error row and the others still run (exit code 1 when any row failed).
    """
    from rich.console import Console

    from edgecifar import data as cifar
    from edgecifar.bench import core, report
    from edgecifar.bench.devices import Job, open_device
    from edgecifar.runs import git_commit, runs_root

    thread_list = core.parse_threads(threads)
    files = core.expand(paths) if paths else core.expand(core.default_paths(runs_root()))
    dataset = cifar.load(data)
    n = min(limit or len(dataset.y_test), len(dataset.y_test))
    images, labels = dataset.x_test[:n], dataset.y_test[:n]
    dev = open_device(device, ssh_key=ssh_key, remote_python=remote_python, known_hosts=ssh_known_hosts,
                      benchmark_binary=benchmark_binary)

    console = Console(width=None if sys.stdout.isatty() else 220)
    click.echo(f"bench: {len(files)} file(s) x threads {','.join(map(str, thread_list))} on {dev.name}; "
               f"{n} test images from {dataset.source}; {runs} runs in {blocks} blocks after {warmup} warm-up",
               err=True)

    def progress(row):
        state = "ok" if row["status"] == "ok" else f"error: {row['error']}"
        click.echo(f"  {Path(row['file']).name} ({row['threads']} thread(s)): {state}", err=True)

    job = Job(file=Path(), images=Path(), runs=runs, warmup=warmup, blocks=blocks, batch=batch, runtime=runtime,
              timeout=timeout)
    rows = core.run_bench(files, images, labels, dev, thread_list, job, on_row=progress)

    console.print(report.table(rows, title=f"edgecifar bench on {dev.name} ({n} test images)"))
    console.print(f"lat ms = median of {blocks} block medians of {runs} batch-1 runs; spread = min–max of the "
                  f"block medians (wide spread = a noisy machine); p90/p99 pooled; * = on the Pareto front.",
                  highlight=False)
    notes = {r["note"] for r in rows if r.get("note")}
    for note in sorted(notes):
        console.print(f"note: {note}", highlight=False)

    meta = {"device": dev.name, "threads": thread_list, "runs": runs, "warmup": warmup, "blocks": blocks,
            "batch": batch, "runtime": runtime, "images": n, "data": Path(dataset.source).name,
            "data_fingerprint": dataset.fingerprint, "host": platform.node(), "machine": platform.machine(),
            "python": platform.python_version(), "commit": git_commit(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    if json_out:
        report.write_json_report(json_out, rows, meta)
        click.echo(f"wrote {json_out}", err=True)
    if csv_out:
        report.write_csv_report(csv_out, rows)
        click.echo(f"wrote {csv_out}", err=True)
    if md_out:
        report.write_markdown_report(md_out, rows, meta)
        click.echo(f"wrote {md_out}", err=True)
    if plot_out:
        from edgecifar.bench.plot import pareto_plot

        pareto_plot(rows, plot_out, title=f"CIFAR-10 ({n} test images) on {dev.name}")
        click.echo(f"wrote {plot_out}", err=True)
    if confusion_dir:
        _confusions(rows, labels, dataset.label_names, confusion_dir, console)

    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        click.echo(f"{len(failed)} of {len(rows)} row(s) failed", err=True)
        ctx.exit(1)


def _confusions(rows, labels, names, folder: Path, console) -> None:
    """One PNG per file (its first successful row) and its most confused class pairs."""
    from edgecifar.bench.plot import confusion_png
    from edgecifar.fileio import check_writable_dir
    from edgecifar.metrics import confusion_matrix, most_confused

    check_writable_dir(folder)
    done: set[str] = set()
    for r in rows:
        if r["status"] != "ok" or r["file"] in done or r.get("predictions") is None:
            continue
        done.add(r["file"])
        matrix = confusion_matrix(r["predictions"], labels[:len(r["predictions"])])
        name = Path(r["file"]).name
        out = confusion_png(matrix, tuple(names), folder / f"{name.replace('.', '_')}.png",
                            f"{name}: {100 * r['accuracy']:.1f}% of {r['images']} test images")
        pairs = ", ".join(f"{a}/{b} {k}" for a, b, k in most_confused(matrix, tuple(names), 3))
        console.print(f"{name}: most confused {pairs or '(none)'} -> {out}", highlight=False)
    if not done:
        console.print("--confusion: no successful row with per-image predictions; no matrix written", highlight=False)
