"""Untrained latency probe: what an architecture costs on LiteRT before a minute is spent training it.

    python -m research.probe edge_fast edge_fast:act=relu edge_nano \\
        --reference mnv2_w1.0_96_random_int8.tflite --out runs/probes/latency --markdown probe.md

Each ``MODEL[:key=value[,key=value]]`` names a registered model (``edgecifar models``) and the keywords its
builder gets (values are Python literals, else strings: ``act=relu``, ``alpha=0.35``, ``weights=none``). The
model is built untrained (seeded random weights), saved, converted to
full-integer int8 by the export pipeline (``edgecifar export --int8``: 500 calibration images from the training
data, the file validated in LiteRT on 200 held-out ones) and timed with the ``--reference`` file in one bench run
(:func:`edgecifar.bench.core.run_bench`: one worker process per file, batch 1, one thread, ``--rounds``
interleaved rounds, latency as a fraction of the reference's in the same round). Latency depends on the graph, not on the weights, so an untrained int8 file is enough to choose an
architecture for a latency budget; its accuracy is meaningless (about 10%) and is not shown.

Exit codes: 0, 1 when a model failed to export or a row failed to run (the others are still measured and
the table written), 2 for bad input (a bad spec, an unknown model or keyword, a missing reference file: one
``error:`` line, nothing built).
"""

from __future__ import annotations

import ast
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click

from edgecifar.errors import EdgeCifarError, ModelError, one_line

PROG = "python -m research.probe"
#: Held-out training images the export validates each file on: enough to prove it loads and runs (an untrained
#: model's accuracy says nothing), far fewer than export's 2,000.
VALIDATION_IMAGES = 200
#: Seed of the untrained weights (latency does not depend on them).
SEED = 0
#: Test images each worker gets: the latency is timed on one of them; accuracy is computed but not shown.
TEST_IMAGES = 100


# --------------------------------------------------------------------------- specs (pure)

@dataclass(frozen=True)
class ProbeSpec:
    """One model to probe: a registered name and the keywords for its builder, as written on the command line."""

    text: str
    model: str
    kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def slug(self) -> str:
        """A file name for the spec: ``edge_fast:act=relu`` -> ``edge_fast_act_relu``."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.text).strip("_.") or "model"


def parse_spec(text: str) -> ProbeSpec:
    """``MODEL[:key=value[,key=value]]`` -> ProbeSpec; values by ``ast.literal_eval``, else the text as a string.

    Commas inside brackets or quotes belong to the value (``widths=(32,64)``). Raises EdgeCifarError with one
    line for a malformed spec; whether the model exists is the registry's question."""
    text = text.strip()
    model, colon, rest = text.partition(":")
    model = model.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", model):
        raise EdgeCifarError(f"{text!r}: expected MODEL[:key=value[,key=value]] with a model name first")
    if colon and not rest.strip():
        raise EdgeCifarError(f"{text!r}: nothing after ':' (expected key=value[,key=value])")
    kwargs: dict[str, Any] = {}
    for part in split_top_level(rest) if colon else []:
        if not part.strip():
            raise EdgeCifarError(f"{text!r}: an empty key=value (a stray comma?)")
        key, eq, raw = (s.strip() for s in part.partition("="))
        if not eq or not key.isidentifier() or not raw:
            raise EdgeCifarError(f"{text!r}: {part.strip()!r} is not key=value")
        if key in kwargs:
            raise EdgeCifarError(f"{text!r}: {key} given twice")
        kwargs[key] = literal(raw)
    return ProbeSpec(text, model, tuple(kwargs.items()))


def split_top_level(text: str) -> list[str]:
    """``text`` split at the commas outside brackets and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]


def literal(raw: str) -> Any:
    """A Python literal (``0.35``, ``False``, ``(32, 64)``, ``'relu'``), else ``raw`` itself (``relu``)."""
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return raw


def parse_specs(texts: list[str]) -> list[ProbeSpec]:
    """Every spec parsed, refusing two that would write the same files."""
    specs = [parse_spec(t) for t in texts]
    seen: dict[str, str] = {}
    for s in specs:
        if s.slug in seen:
            raise EdgeCifarError(f"{s.text!r} and {seen[s.slug]!r} would write the same files ({s.slug}); "
                                 "give each model once")
        seen[s.slug] = s.text
    return specs


# --------------------------------------------------------------------------- the table (pure)

def header(rows: list[dict], rounds: int, reference: Path, command: str, cpu: str, commit: str | None,
           runs: int, blocks: int, warmup: int) -> str:
    """What was measured and how: runtime, threads, batch, rounds, host CPU, reference and the command."""
    runtime = next((r["runtime"] for r in rows if r.get("runtime")), "litert")
    versions = next((r["versions"] for r in rows if r.get("versions")), {}) or {}
    version = versions.get({"litert": "ai-edge-litert"}.get(runtime, runtime))
    blocks_text = f"the median of {blocks} block medians of {runs} runs after {warmup} warm-up"
    timing = (f"1 round; latency = {blocks_text}, spread = the block medians' min–max" if rounds == 1 else
              f"{rounds} interleaved rounds; latency = the median of the round medians (each {blocks_text}), "
              "spread = their min–max")
    return (f"Untrained int8 latency probe: runtime {runtime}{f' {version}' if version else ''}, 1 thread, batch 1, "
            f"{timing}; host CPU {cpu}; × ref = latency as a fraction of {reference.name}'s, the median over "
            "rounds of the ratio in the same round. Untrained weights: accuracy is meaningless and not shown. "
            f"Command: `{command}`; commit {commit or 'unknown'}.")


def markdown(rows: list[dict], names: list[str], head: str) -> str:
    """The probe table: one line per row, ``names[i]`` in its first column; failed rows say why."""
    from edgecifar.bench.core import finite

    cols = ["spec", "parameters", "MACs", "int8 size", "latency ms", "× ref", "spread ms"]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def num(value, fmt: str, unit: str = "") -> str:
        return format(value, fmt) + unit if finite(value) else "–"

    for r, name in zip(rows, names):
        macs = r.get("macs")
        cells = [name, num(r.get("parameters"), ",d"), num(macs / 1e6 if macs else None, ".2f", "M"),
                 num(r.get("bytes"), ",d", " B")]
        if r.get("status") == "ok":
            cells += [num(r.get("latency_ms"), ".3f"), num(r.get("vs_reference"), ".3f"),
                      f"{num(r.get('spread_lo_ms'), '.3f')}–{num(r.get('spread_hi_ms'), '.3f')}"]
        else:
            cells += ["–", "–", "error: " + (r.get("error") or "failed").replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- building and exporting

def build(spec: ProbeSpec):
    """``spec``'s model, untrained (the registry's ``create``) from seeded random weights (the same weights every
    time; the int8 file's bytes may still differ between processes, as calibration's float arithmetic does). An
    unknown model or a keyword its builder refuses is a ModelError (exit 2)."""
    import keras

    from edgecifar import models

    models.get(spec.model)  # an unknown name lists the known ones
    keras.utils.set_random_seed(SEED)
    try:
        return models.create(spec.model, **dict(spec.kwargs))
    except Exception as exc:  # a TypeError for an unknown keyword, a ValueError for a bad value
        raise ModelError(f"{spec.text}: cannot build {spec.model} ({one_line(exc)})") from None


def save(model, spec: ProbeSpec, folder: Path) -> Path:
    """``folder/SLUG/SLUG.keras``, written atomically."""
    from edgecifar.fileio import atomic_path

    path = folder / spec.slug / f"{spec.slug}.keras"
    with atomic_path(path) as tmp:
        model.save(tmp)
    return path


def export_int8(keras_path: Path, data: str | None, say: Callable[[str], None]) -> tuple[Path, str | None]:
    """The int8 file ``edgecifar export KERAS --int8`` writes beside ``keras_path``, and None, or the error."""
    from edgecifar.export import formats, pipeline, source

    int8 = next(f for f in formats.FORMATS if f.key == "int8")
    cfg = pipeline.ExportConfig(source.resolve(keras_path), [int8], out=keras_path.parent, data=data,
                                val_size=VALIDATION_IMAGES)
    outcome = pipeline.run(cfg, say=say).outcomes[0]
    return outcome.path, None if outcome.written else f"int8 export failed: {outcome.validation.error}"


# --------------------------------------------------------------------------- the command

@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("specs", nargs=-1, required=True)
@click.option("--reference", type=click.Path(path_type=Path), required=True,
              help="The .tflite file latencies are fractions of (timed in the same rounds).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Work folder for the .keras and .tflite files, one subfolder per spec (default: RUNS/probes).")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True,
              help="Measure every file this many times, round-robin (edgecifar bench --rounds).")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the table as Markdown (atomically).")
@click.option("--data", default=None, help="CIFAR-10 archive or folder for calibration and the timed image "
                                           "(default: $EDGECIFAR_DATA, Keras' cache).")
@click.pass_context
def probe_command(ctx, specs, reference, out, rounds, md_out, data):
    """Build registered models untrained, export them to int8 TFLite and time them beside --reference
    (LiteRT, batch 1, one thread). SPECS: MODEL[:key=value[,key=value]], e.g. edge_fast:act=relu."""
    try:
        failed = _probe(list(specs), reference, out, rounds, md_out, data)
    except EdgeCifarError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(exc.exit_code)
    ctx.exit(1 if failed else 0)


def _probe(texts: list[str], reference: Path, out: Path | None, rounds: int, md_out: Path | None,
           data: str | None) -> bool:
    """Build, export, bench, write the table; True when a row failed."""
    specs = parse_specs(texts)  # before TensorFlow loads
    if not reference.is_file() or reference.suffix.lower() != ".tflite":
        raise EdgeCifarError(f"--reference {reference}: no such .tflite file")
    if md_out:
        from edgecifar.fileio import check_writable_file

        check_writable_file(md_out, "--markdown")  # before the builds and rounds, not after

    from edgecifar import data as cifar
    from edgecifar.bench.core import run_bench
    from edgecifar.bench.devices import Job, LocalDevice
    from edgecifar.errors import require_tensorflow
    from edgecifar.fileio import check_writable_dir, write_table
    from edgecifar.host import cpu_model
    from edgecifar.runs import git_commit, runs_root

    dataset = cifar.load(data)
    require_tensorflow()
    built = [(s, build(s)) for s in specs]  # a spec that does not build stops everything before a file is written
    out = check_writable_dir(out or runs_root() / "probes")
    saved = [(s, save(model, s, out)) for s, model in built]
    say = lambda msg: click.echo(f"probe: {msg}", err=True)  # noqa: E731
    files: list[tuple[Path, str | None]] = []
    for spec, keras_path in saved:
        say(f"{spec.text}: exporting {keras_path.name} to int8")
        files.append(export_int8(keras_path, data, say))
    names = {path.resolve(): spec.text for (spec, _), (path, _) in zip(saved, files)}
    if reference.resolve() in names:  # the reference is one of the probes' own files: bench that path once
        reference = next(path for path, _ in files if path.resolve() == reference.resolve())
        names[reference.resolve()] += " (reference)"
    else:
        files.append((reference, None))
        names[reference.resolve()] = f"reference: {reference.name}"

    say(f"timing {len(files)} files, {rounds} round(s), 1 thread, batch 1")
    job = Job(file=Path(), images=Path(), threads=1)
    n = min(TEST_IMAGES, len(dataset.y_test))
    rows = run_bench(files, dataset.x_test[:n], dataset.y_test[:n], LocalDevice(), [1], job, rounds=rounds,
                     reference=reference,
                     on_row=lambda row, r: say(f"round {r}/{rounds}: {Path(row['file']).name}: "
                                               f"{row['status'] if row['status'] == 'ok' else row['error']}"))
    command = shlex.join([*PROG.split(), *sys.argv[1:]])
    head = header(rows, rounds, reference, command, cpu_model(), git_commit(), job.runs, job.blocks, job.warmup)
    write_table(markdown(rows, [names[Path(r["file"]).resolve()] for r in rows], head), "", md_out, None)
    if md_out:
        say(f"wrote {md_out}")
    return any(r["status"] != "ok" for r in rows)


if __name__ == "__main__":  # pragma: no cover
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter, as the CLI sets it
    probe_command(prog_name=PROG)
