"""Top-1 agreement of a device with this machine: the same files on the same test images, image by image.

    python -m edgecifar.bench.agreement [FILES...] --device ssh://root@127.0.0.1:2222 --ssh-key KEY
        --remote-python /opt/venv/bin/python [--data ARCHIVE] [--limit N]
        [--markdown OUT.md] [--json OUT.json] [--csv OUT.csv]

Each file runs in the bench's worker twice, one thread each: here (``cpu``) and on the device (through the
same :mod:`edgecifar.bench.devices` class ``edgecifar bench --device`` uses). Per file: accuracy on both
sides, the share of test images whose top-1 class is the same on both (agreement), and on how many images
the raw outputs are bit-identical (the worker hashes each image's outputs). Made for ARM64, where LiteRT runs other
kernels than on x86 (``make arm64-results``); works for any device that runs the worker.

Default FILES: the shipped zoo. A file whose runtime the device lacks (ONNX on the base install, which has
no onnxruntime) gets a row that says so and what installs it; the exit code is 1 only when a run failed
for another reason. An emulated device's timing is never reported (the worker does not time there).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import platform
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import click
import numpy as np

from edgecifar.bench.core import base_row, expand, finite
from edgecifar.bench.devices import Job, LocalDevice, click_options, open_device
from edgecifar.errors import EdgeCifarError
from edgecifar.fileio import write_json, write_text
from edgecifar.host import cpu_model

#: CSV columns, in order.
COLUMNS = ("file", "precision", "bytes", "images", "here_machine", "here_accuracy", "device_machine",
           "device_accuracy", "device_ci_low", "device_ci_high", "agree", "agreement", "identical_outputs",
           "emulated", "status", "error")


def agreement(here: Sequence[int], there: Sequence[int]) -> tuple[int, int]:
    """(images with the same top-1 class on both sides, images compared); both lists cover the same images."""
    if len(here) != len(there):
        raise EdgeCifarError(f"cannot compare predictions of {len(here)} and {len(there)} images")
    return int(np.sum(np.asarray(here) == np.asarray(there))), len(here)


def compare(path: Path, here: dict, there: dict) -> dict:
    """One report row from the two worker results for ``path``."""
    row = {k: v for k, v in base_row(path, "", 1).items() if k in ("file", "precision", "bytes")}
    row.update(precision=row.get("precision") or here.get("precision_guess") or there.get("precision_guess"),
               here_machine=here.get("machine"), device_machine=there.get("machine"),
               emulated=there.get("emulated"), images=here.get("images"),
               here_accuracy=here.get("accuracy"), device_accuracy=there.get("accuracy"),
               device_ci_low=there.get("ci_low"), device_ci_high=there.get("ci_high"),
               agree=None, agreement=None, identical_outputs=None, error=None)
    if here.get("status") != "ok":
        return {**row, "status": "error", "error": f"here: {here.get('error')}"}
    if there.get("status") != "ok":
        if there.get("missing_runtime"):
            return {**row, "status": "not run", "error": f"on the device: {there['missing_runtime']}"}
        return {**row, "status": "error", "error": f"device: {there.get('error')}"}
    if there.get("predictions") is None:
        return {**row, "status": "error", "error": "device: no per-image predictions (it does not run the worker)"}
    agree, n = agreement(here["predictions"], there["predictions"])
    same, _ = agreement(here["output_digests"], there["output_digests"])
    row.update(agree=agree, agreement=agree / n if n else float("nan"), identical_outputs=same, status="ok")
    return row


def run(files: list[tuple[Path, str | None]], images: np.ndarray, labels: np.ndarray, device,
        job: Job) -> tuple[list[dict], dict]:
    """(one row per file, the device's own description from its first answer)."""
    import tempfile

    here_device = LocalDevice()
    rows: list[dict] = []
    seen: dict = {}
    with tempfile.TemporaryDirectory(prefix="edgecifar-agreement-") as tmp:
        npz = Path(tmp) / "test.npz"
        np.savez(npz, x=np.ascontiguousarray(images, dtype=np.uint8), y=np.asarray(labels, dtype=np.int64))
        try:
            for path, problem in files:
                if problem:
                    rows.append({"file": str(path), "status": "error", "error": problem})
                    continue
                if device.refusal(path):
                    rows.append({"file": str(path), "status": "not run", "error": device.refusal(path)})
                    continue
                this = replace(job, file=path, images=npz)
                here, there = here_device.run(this), device.run(this)
                if not seen and there.get("machine"):
                    seen = {k: there.get(k) for k in ("machine", "emulated", "python", "versions", "host")}
                    seen["here"] = {k: here.get(k) for k in ("machine", "python", "versions")}
                row = compare(path, here, there)
                rows.append(row)
                click.echo(f"  {path.name}: {row['status']}"
                           + (f", agreement {row['agree']}/{row['images']}" if row["status"] == "ok" else
                              f" ({row['error']})"), err=True)
        finally:
            device.close()
    return rows, seen


def _pct(value) -> str:
    return f"{100 * value:.1f}%" if finite(value) else "–"


def _versions(packages: dict | None) -> str:
    return ", ".join(f"{name} {version}" for name, version in (packages or {}).items())


def markdown(rows: list[dict], meta: dict) -> str:
    dev = meta.get("device_info") or {}
    here = dev.get("here") or {}
    there_m, here_m = dev.get("machine") or "device", here.get("machine") or platform.machine()
    lines = [
        f"# Top-1 agreement: {there_m} ({meta['device']}) against {here_m}",
        "",
        f"Made by `{meta['command']}` on commit {meta.get('commit')}, {meta['created']}.",
        "",
        f"- Test images: {meta['images']} from {meta['data']} (fingerprint {meta['data_fingerprint']}); "
        "the same images on both sides, one thread, the bench's worker in its own process per file.",
        f"- Here: {here_m}, {meta['cpu_model']}, Python {here.get('python')}, {_versions(here.get('versions'))}.",
        f"- Device: {there_m}, Python {dev.get('python')}, {_versions(dev.get('versions'))}"
        + (f"; emulated: {dev['emulated']}." if dev.get("emulated") else "."),
    ]
    if dev.get("emulated"):
        lines.append("- Latency not reported: emulated CPU (an emulated core's timing says nothing about a real "
                     "one; the worker does not time under emulation).")
    lines += ["", f"| file | prec | size | {here_m} top-1 | {there_m} top-1 [95% CI] | top-1 agreement | "
                  "bit-identical outputs | status |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = r.get("status") == "ok"
        dev_acc = (f"{_pct(r['device_accuracy'])} [{_pct(r['device_ci_low'])[:-1]}–{_pct(r['device_ci_high'])}]"
                   if ok and finite(r.get("device_accuracy")) else "–")
        agree = f"{_pct(r['agreement'])} ({r['agree']}/{r['images']})" if ok else "–"
        outputs = f"{r['identical_outputs']}/{r['images']} images" if ok else "–"
        size = f"{r['bytes']:,} B" if finite(r.get("bytes")) else "–"
        status = r["status"] if ok else f"{r['status']}: {r.get('error')}".replace("|", "/")
        lines.append(f"| {Path(r['file']).name} | {r.get('precision') or ''} | {size} | "
                     f"{_pct(r.get('here_accuracy'))} | {dev_acc} | {agree} | {outputs} | {status} |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    return buf.getvalue()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--device", required=True, help="ssh://user@host[:port] (a device that runs the bench's worker)")
@click_options
@click.option("--data", default=None, help="CIFAR-10 archive or folder (default: $EDGECIFAR_DATA, Keras' cache).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Use the first N test images.")
@click.option("--timeout", type=click.FloatRange(1), default=1800, show_default=True, help="Seconds per file and side.")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the table as Markdown.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write rows as JSON.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False, path_type=Path), help="Write rows as CSV.")
@click.pass_context
def agreement_command(ctx, **options):
    """Top-1 agreement of DEVICE with this machine on the same test images, per model file (default: the zoo)."""
    try:
        failed = _agreement(**options)
    except EdgeCifarError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(exc.exit_code)
    ctx.exit(1 if failed else 0)


def _agreement(paths, device, data, limit, timeout, md_out, json_out, csv_out, **device_options) -> bool:
    """Measure, write the reports; True when a run failed (a missing runtime on the device is no failure)."""
    from edgecifar import data as cifar
    from edgecifar import zoo
    from edgecifar.fileio import check_writable_file
    from edgecifar.runs import git_commit

    for flag, out in (("--markdown", md_out), ("--csv", csv_out), ("--json", json_out)):
        if out:
            check_writable_file(out, flag)  # before minutes on the device, not after
    files = expand(paths or zoo.files())
    dataset = cifar.load(data)
    n = min(limit or len(dataset.y_test), len(dataset.y_test))
    dev = open_device(device, **device_options)
    if isinstance(dev, LocalDevice):
        raise EdgeCifarError(f"--device {device}: agreement of this machine with itself says nothing; "
                             "name another device (ssh://user@host[:port])")
    click.echo(f"agreement: {len(files)} file(s), {n} test images from {dataset.source}, here against {dev.name}",
               err=True)
    # The worker's timing figures are not used here: few runs keep the x86 side quick.
    job = Job(file=Path(), images=Path(), threads=1, runs=10, warmup=2, blocks=1, batch=8, timeout=timeout)
    rows, device_info = run(files, dataset.x_test[:n], dataset.y_test[:n], dev, job)

    meta = {"command": shlex.join(["python", "-m", "edgecifar.bench.agreement", *sys.argv[1:]]),
            "device": dev.name, "device_info": device_info, "images": n, "data": Path(dataset.source).name,
            "data_fingerprint": dataset.fingerprint, "cpu_model": cpu_model(), "commit": git_commit(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    text = markdown(rows, meta)
    click.echo(text)
    for out, write in ((md_out, lambda p: write_text(p, text)), (csv_out, lambda p: write_text(p, to_csv(rows))),
                       (json_out, lambda p: write_json(p, {"meta": meta, "rows": rows}))):
        if out:
            write(out)
            click.echo(f"wrote {out}", err=True)
    return any(r["status"] == "error" for r in rows)


if __name__ == "__main__":
    agreement_command(prog_name="python -m edgecifar.bench.agreement")
