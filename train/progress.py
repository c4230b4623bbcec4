"""A rich progress bar for Keras training: epoch, loss, accuracy, images/s and time remaining."""

from __future__ import annotations

import time

import keras
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


def make_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.3f}  {task.fields[ips]:,.0f} img/s"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, transient=False,
    )


class ProgressCallback(keras.callbacks.Callback):
    """Advances one bar per epoch and an overall bar; measures training images per second."""

    def __init__(self, progress: Progress, run_task, epoch: int, epochs: int, steps: int, batch_size: int,
                 n_images: int):
        super().__init__()
        self.progress, self.run_task = progress, run_task
        self.epoch, self.epochs, self.steps = epoch, epochs, steps
        self.batch_size, self.n_images = batch_size, n_images
        self.seen = 0
        self.seconds = 0.0

    def on_train_begin(self, logs=None):
        self.task = self.progress.add_task(f"epoch {self.epoch + 1}/{self.epochs}", total=self.steps,
                                           loss=0.0, acc=0.0, ips=0.0)
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        self.seen = min((batch + 1) * self.batch_size, self.n_images)
        self.seconds = time.perf_counter() - self.start
        fields = dict(loss=float(logs.get("loss", 0.0)), acc=float(logs.get("accuracy", 0.0)),
                      ips=self.seen / max(self.seconds, 1e-9))
        self.progress.update(self.task, advance=1, **fields)
        self.progress.update(self.run_task, advance=1, **fields)

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.start
        self.progress.update(self.task, visible=False)

    @property
    def images_per_second(self) -> float:
        return self.seen / max(self.seconds, 1e-9)
