"""``edgecifar train RECIPE``: the CLI over train.runner."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from edgecifar.train.recipes import PRECISION_CHOICES
from edgecifar.units import percent, plural, size


@click.command()
@click.argument("recipe", required=False)
@click.option("--epochs", type=click.IntRange(min=1), help="Override the recipe's epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Override the recipe's batch size.")
@click.option("--ema", type=click.FloatRange(0, 1, min_open=True, max_open=True), metavar="DECAY",
              help="Average the weights (per-step decay, e.g. 0.999) and ship the average (default: the recipe's).")
@click.option("--whiten-stem/--no-whiten-stem", default=None,
              help="Freeze the stem as a PCA whitening of training patches (default: the recipe's).")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True,
              help="auto: the recipe's mixed bfloat16 only where the CPU runs bf16 natively (avx512_bf16 or AMX), "
                   "else float32; float32 or bfloat16: that, on any CPU. Said in one line, kept in metrics.json; "
                   "a resumed run keeps its own.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Run directory (default runs/RECIPE-seedS).")
@click.option("--data", type=click.Path(path_type=Path),
              help="cifar-10-python.tar.gz, cifar-10-batches-py/, or a folder of your photos with one subfolder per "
                   "class (optionally in train/ val/ test/) (default $EDGECIFAR_DATA).")
@click.option("--image-size", type=click.IntRange(8, 512), default=32, show_default=True,
              help="A photo folder's images become this square; the recipe's model takes it and the folder's classes.")
@click.option("--model", "model_spec", metavar="FILE.py:FUNCTION",
              help="Your own architecture: build(input_shape, classes) in your Python file returns a Keras model "
                   "(pixels 0-255 in, class probabilities out); the recipe gives every training setting. The file "
                   "is run as code: name only one you trust.")
@click.option("--val-size", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Validation images held out of training (stratified).")
@click.option("--weights", help="MobileNetV2 backbone weights file or folder (default $EDGECIFAR_WEIGHTS).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last finished epoch.")
@click.option("--overwrite", is_flag=True, help="Delete an existing run in --out and start again.")
@click.option("--list", "list_recipes", is_flag=True, help="List the recipes and exit.")
@click.option("--quiet", is_flag=True, help="No progress bar (one line per epoch).")
@click.option("--strategy", type=click.Choice(["mirrored", "multi-worker"]),
              help="Data-parallel training on tf.distribute: mirrored (this machine's GPUs) or multi-worker "
                   "(several machines; cluster from TF_CONFIG or --workers). The batch size is the global batch.")
@click.option("--workers", metavar="HOST:PORT,...",
              help="multi-worker: every worker's address, the same list on every machine (writes TF_CONFIG).")
@click.option("--task-index", type=click.IntRange(min=0), help="multi-worker: this machine's position in --workers (0 = chief).")
@click.option("--worker-timeout", type=click.FloatRange(min=1), default=120.0, show_default=True,
              help="multi-worker: seconds to wait for the other workers at a step before failing.")
def train(recipe, epochs, batch_size, ema, whiten_stem, precision, seed, out, data, image_size, model_spec, val_size,
          weights, resume, overwrite, list_recipes, quiet, strategy, workers, task_index, worker_timeout):
    """Train RECIPE on CIFAR-10 or a folder of your photos and write model.keras, history.csv and metrics.json
    (and keep checkpoint/)."""
    from edgecifar.train.recipes import RECIPES, get

    if list_recipes:
        for r in RECIPES.values():
            click.echo(f"{r.name:18s} {r.epochs:3d} ep  batch {r.batch_size:4d}  {r.description}")
        return
    if not recipe:
        raise click.UsageError(f"missing RECIPE, one of: {', '.join(RECIPES)} (--list describes them)")
    from edgecifar.errors import EdgeCifarError, require_tensorflow
    from edgecifar.train.checkpoint import check_run_dir
    from edgecifar.train.config import RunConfig
    from edgecifar.train.runner import run

    if (workers or task_index is not None) and strategy != "multi-worker":
        raise EdgeCifarError("--workers and --task-index go with --strategy multi-worker")
    if task_index is not None and not workers:
        raise EdgeCifarError("--task-index needs --workers host:port,host:port (every worker, in the same order)")
    # Every argument is checked before TensorFlow loads (seconds) and the data after it.
    cfg = RunConfig(get(recipe).with_overrides(epochs=epochs, batch_size=batch_size, ema=ema,
                                                   whiten_stem=whiten_stem), seed=seed, out=out,
                    data=str(data) if data else None, val_size=val_size, resume=resume, overwrite=overwrite,
                    weights=weights, progress=not quiet and sys.stderr.isatty(), strategy=strategy,
                    collective_timeout=worker_timeout, precision=precision, image_size=image_size,
                    user_model=_user_model(model_spec, get(recipe)) if model_spec else None)
    check_run_dir(cfg)
    if workers:
        from edgecifar.train.distributed import write_tf_config

        write_tf_config(workers, task_index)
    require_tensorflow()
    from rich.console import Console

    if sys.stderr.isatty():   # a terminal would otherwise sit silent for a minute; logs and pipes get the epochs
        click.echo(f"train: loading TensorFlow, the data and {cfg.recipe.model}; the first line per epoch comes "
                   "when that epoch ends", err=True)
    try:
        metrics = run(cfg)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_how_to_continue(click.get_current_context(), cfg.run_dir)) from None
    console = Console(soft_wrap=True)
    console.print(f"[bold]{metrics['recipe']}[/] seed {metrics['seed']}: {plural(metrics['epochs'], 'epoch')} in "
                  f"{metrics['train_seconds']:.0f} s ({metrics['images_per_s']:,.0f} img/s), "
                  f"{metrics['parameters']:,} parameters, {metrics['macs'] / 1e6:.1f} MMACs")
    tested = (f"test accuracy {percent(metrics['test_accuracy'], 2)} on {plural(metrics['test_images'], 'image')}"
              if metrics["test_images"] else "no test images (the data has none apart from its training images)")
    console.print(f"validation accuracy {percent(metrics['val_accuracy'], 2)} on "
                  f"{plural(metrics['val_images'], 'image')}; {tested}")
    if strategy == "multi-worker":
        from edgecifar.train.distributed import is_chief, read_tf_config

        if not is_chief(read_tf_config()):
            console.print("this worker's files were temporary (deleted); the chief wrote the run directory")
            return
    from edgecifar.train.checkpoint import CHECKPOINT

    kept = sum(f.stat().st_size for f in (cfg.run_dir / CHECKPOINT).rglob("*") if f.is_file())
    console.print(f"wrote {cfg.run_dir}/model.keras, history.csv, metrics.json; kept {CHECKPOINT}/ ({size(kept)}: "
                  "the last epoch with its optimizer state)")


def _user_model(spec: str, recipe):
    """``--model FILE.py:FUNCTION``, checked before TensorFlow loads; recipes whose settings reach into one of our
    architectures (a frozen MobileNetV2 backbone, a whitening stem) are refused with it in one line."""
    from edgecifar.errors import EdgeCifarError
    from edgecifar.train import usermodel

    ours = [name for name, used in (("freeze", recipe.freeze != "none"), ("whiten_stem", recipe.whiten_stem),
                                    ("model_kwargs", bool(recipe.model_kwargs))) if used]
    if ours:
        raise EdgeCifarError(f"--model {spec}: recipe {recipe.name} sets {', '.join(ours)}, which apply to its own "
                             f"model ({recipe.model}); choose a recipe without them (e.g. bn_gap_sound, edge_fast)")
    return usermodel.parse(spec)


def _how_to_continue(ctx: click.Context, run_dir: Path) -> str:
    """What an interrupted run has saved and the command that continues it (this one, with --resume)."""
    from edgecifar.train.checkpoint import CHECKPOINT

    args = [arg for arg in command_line(ctx) if arg != "--overwrite"]
    try:
        done = json.loads((run_dir / CHECKPOINT / "state.json").read_text())["epochs_done"]
    except (OSError, ValueError, KeyError):
        done = 0
    if not done:
        return f"no epoch had finished; start again with: {shlex.join(args)}"
    return (f"{plural(done, 'epoch')} saved in {run_dir / CHECKPOINT}; continue with: "
            f"{shlex.join(args + ([] if '--resume' in args else ['--resume']))}")


def command_line(ctx: click.Context) -> list[str]:
    """The command as it was given: its name and the arguments and options set on the command line."""
    from click.core import ParameterSource

    args, options = [], []
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name) not in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            continue
        value = ctx.params[param.name]
        if isinstance(param, click.Argument):
            args.append(str(value))
        elif getattr(param, "is_flag", False):
            if value or param.secondary_opts:
                options.append(param.opts[0] if value else param.secondary_opts[0])
        else:
            options += [param.opts[0], str(value)]
    return ctx.command_path.split() + args + options
