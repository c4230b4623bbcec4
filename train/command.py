"""``edgecifar train RECIPE``: the CLI over train.runner."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("recipe", required=False)
@click.option("--epochs", type=click.IntRange(min=1), help="Override the recipe's epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Override the recipe's batch size.")
@click.option("--ema", type=click.FloatRange(0, 1, min_open=True, max_open=True), metavar="DECAY",
              help="Average the weights (per-step decay, e.g. 0.999) and ship the average (default: the recipe's).")
@click.option("--whiten-stem/--no-whiten-stem", default=None,
              help="Freeze the stem as a PCA whitening of training patches (default: the recipe's).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Run directory (default runs/RECIPE-seedS).")
@click.option("--data", type=click.Path(path_type=Path), help="cifar-10-python.tar.gz or cifar-10-batches-py/ (default $EDGECIFAR_DATA).")
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
def train(recipe, epochs, batch_size, ema, whiten_stem, seed, out, data, val_size, weights, resume, overwrite, list_recipes, quiet,
          strategy, workers, task_index, worker_timeout):
    """Train RECIPE on CIFAR-10 and write model.keras, history.csv and metrics.json."""
    from edgecifar.train.recipes import RECIPES, get

    if list_recipes or not recipe:
        for r in RECIPES.values():
            click.echo(f"{r.name:18s} {r.epochs:3d} ep  batch {r.batch_size:4d}  {r.description}")
        return
    from edgecifar.errors import EdgeCifarError, require_tensorflow

    if (workers or task_index is not None) and strategy != "multi-worker":
        raise EdgeCifarError("--workers and --task-index go with --strategy multi-worker")
    if task_index is not None and not workers:
        raise EdgeCifarError("--task-index needs --workers host:port,host:port (every worker, in the same order)")
    if workers:
        from edgecifar.train.distributed import write_tf_config

        write_tf_config(workers, task_index)
    require_tensorflow()
    from rich.console import Console

    from edgecifar.train.runner import RunConfig, run

    cfg = RunConfig(get(recipe).with_overrides(epochs=epochs, batch_size=batch_size, ema=ema,
                                                   whiten_stem=whiten_stem), seed=seed, out=out,
                    data=str(data) if data else None, val_size=val_size, resume=resume, overwrite=overwrite,
                    weights=weights, progress=not quiet, strategy=strategy, collective_timeout=worker_timeout)
    metrics = run(cfg)
    console = Console()
    console.print(f"[bold]{metrics['recipe']}[/] seed {metrics['seed']}: {metrics['epochs']} epochs in "
                  f"{metrics['train_seconds']:.0f} s ({metrics['images_per_s']:,.0f} img/s), "
                  f"{metrics['parameters']:,} parameters, {metrics['macs'] / 1e6:.1f} MMACs")
    console.print(f"validation accuracy {metrics['val_accuracy']:.4f} on {metrics['val_images']:,} images; "
                  f"test accuracy {metrics['test_accuracy']:.4f} on {metrics['test_images']:,} images")
    if strategy == "multi-worker":
        from edgecifar.train.distributed import is_chief, read_tf_config

        if not is_chief(read_tf_config()):
            console.print("this worker's files were temporary (deleted); the chief wrote the run directory")
            return
    console.print(f"wrote {cfg.run_dir}/model.keras, history.csv, metrics.json")
