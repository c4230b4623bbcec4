"""Data-parallel training on TensorFlow's own engine: ``tf.distribute`` strategies.

``--strategy mirrored`` uses ``tf.distribute.MirroredStrategy`` (the GPUs of one machine, or its CPU);
``--strategy multi-worker`` uses ``tf.distribute.MultiWorkerMirroredStrategy`` (several machines, the
cluster read from ``TF_CONFIG``; ``--workers host:port,... --task-index N`` writes ``TF_CONFIG``).

Batch and learning rate: the recipe's batch size (or ``--batch-size``) is the GLOBAL batch. Every step
the global batch is split evenly across the replicas (per-replica batch = global / replicas), each
replica sums its examples' losses and divides by the global batch's size, and the gradients are summed
across replicas. A step is therefore the same step one process takes on the whole global batch, so the
learning rate is unchanged, and a run equals the single-process run with the same global batch and
seed up to floating-point summation order. Changing the global batch with ``--batch-size`` does not
rescale the learning rate (as in a single-process run); under the linear-scaling rule you would
multiply the recipe's rate by new_batch / recipe_batch yourself.

Why not ``model.fit``: Keras 3.15's ``model.fit`` under MultiWorkerMirroredStrategy fails on its first
step here (``ValueError: Attempt to convert a value (PerReplica...)``, keras-team/keras#20585), so
training uses TensorFlow's engine directly on the same Keras model, optimizer and loss: a
``tf.function`` step around ``strategy.run``, ``strategy.experimental_distribute_dataset`` and replica
all-reduces. The Keras optimizer sums the gradients across replicas itself.

Data: each epoch's ``tf.data`` pipeline (``pipeline.epoch_dataset``) is auto-sharded by DATA. Every
worker runs the whole (deterministic) pipeline and keeps its slice of each global batch, so the
augmentation is exactly the single-process one.

Files: only the chief (task ``chief``, or ``worker`` 0) writes the run directory. The other workers
run the same code, checkpoints included, into a temporary folder that is deleted when they stop, as
TensorFlow's multi-worker guide prescribes. Resume: the chief alone reads the checkpoint (the other
machines need not see its disk) and broadcasts the weights, optimizer state and progress to every
replica. Keras 3's ``BackupAndRestore`` only runs inside ``model.fit`` and has every process write the
same ``backup_dir`` (no chief/worker split), so the runner's per-epoch checkpoint is what ``--resume``
restarts from.

Exactness: for models without Dropout or BatchNorm a run matches the single-process run to float
rounding (the tests check it). Dropout draws different masks per replica, and BatchNorm normalises
with each replica's slice of the batch (Keras 3 BatchNormalization(synchronized=True) would not);
its moving statistics are averaged over the replicas after every epoch. Every worker evaluates the
whole validation set itself (it is small); the results are averaged across workers.

Failures: collectives time out after ``collective_timeout`` seconds, and a worker that disappears makes
the others fail with one line (``EdgeCifarError``) telling the user to restart every worker with
``--resume``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from edgecifar.errors import EdgeCifarError
from edgecifar.train.assemble import build_model, compile_model
from edgecifar.train.checkpoint import State, load_checkpoint
from edgecifar.train.pipeline import predict
from edgecifar.units import plural

STRATEGIES = ("mirrored", "multi-worker")
DEFAULT_TIMEOUT = 120.0
# Testing aid: split the CPU into N logical devices so MirroredStrategy has N replicas on one CPU.
CPU_REPLICAS_ENV = "EDGECIFAR_CPU_REPLICAS"

_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9._-]+):(\d{1,5})$")


# --------------------------------------------------------------------------- cluster description

def parse_workers(text: str) -> list[str]:
    """``host:port,host:port`` -> list, or a one-line error saying which entry is wrong."""
    workers = [w.strip() for w in text.split(",") if w.strip()]
    if not workers:
        raise EdgeCifarError("--workers is empty: give host:port of every worker, comma-separated")
    for w in workers:
        m = _HOST_PORT.match(w)
        if not m or not 0 < int(m.group(2)) < 65536:
            raise EdgeCifarError(f"--workers: {w!r} is not host:port (e.g. 10.0.0.1:12345)")
    if len(set(workers)) != len(workers):
        raise EdgeCifarError(f"--workers lists a worker twice: {text}")
    return workers


def tf_config(workers: list[str], task_index: int) -> dict:
    """The ``TF_CONFIG`` of worker ``task_index`` in a cluster of ``workers`` (worker 0 is the chief)."""
    if not 0 <= task_index < len(workers):
        raise EdgeCifarError(f"--task-index {task_index} is out of range: --workers lists {len(workers)} "
                             f"workers (0 to {len(workers) - 1})")
    return {"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": task_index}}


def write_tf_config(workers: str, task_index: int | None) -> dict:
    """Validate ``--workers/--task-index`` and set ``TF_CONFIG`` in this process's environment."""
    if task_index is None:
        raise EdgeCifarError("--workers needs --task-index N (this machine's position in --workers, 0 = chief)")
    config = tf_config(parse_workers(workers), task_index)
    os.environ["TF_CONFIG"] = json.dumps(config)
    return config


def read_tf_config() -> dict:
    """The cluster from ``TF_CONFIG``, checked enough to give one-line errors instead of TF's."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        raise EdgeCifarError("--strategy multi-worker needs the cluster: set TF_CONFIG, or pass "
                             "--workers host:port,host:port --task-index N on every machine")
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        kind, index = task["type"], int(task["index"])
        size = len(cluster[kind])
    except (ValueError, KeyError, TypeError) as exc:
        raise EdgeCifarError(f"TF_CONFIG is not a valid cluster description ({type(exc).__name__}: {exc})") from None
    if set(cluster) - {"chief", "worker"} or kind not in ("chief", "worker"):
        raise EdgeCifarError("TF_CONFIG: multi-worker training uses only 'chief' and 'worker' tasks "
                             f"(got cluster {sorted(cluster)}, task {kind!r})")
    if not 0 <= index < size:
        raise EdgeCifarError(f"TF_CONFIG: task index {index} is out of range for {plural(size, repr(kind) + ' task')}")
    return config


def is_chief(config: dict) -> bool:
    """The chief is the ``chief`` task, or ``worker`` 0 when the cluster has no chief."""
    kind, index = config["task"]["type"], int(config["task"]["index"])
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in config["cluster"])


# --------------------------------------------------------------------------- strategies

def make_strategy(kind: str, timeout: float):
    """Create the strategy. Must run before any other TensorFlow op in the process (MWMS requires it)."""
    import tensorflow as tf

    if kind == "mirrored":
        n_cpu = int(os.environ.get(CPU_REPLICAS_ENV, "0") or 0)
        if n_cpu > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n_cpu)
            return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n_cpu)])
        return tf.distribute.MirroredStrategy()
    if kind == "multi-worker":
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=timeout, implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    raise EdgeCifarError(f"unknown strategy {kind!r}; known: {', '.join(STRATEGIES)}")


# TensorFlow errors that mean "another worker is gone or unreachable".
def _peer_errors():
    import tensorflow as tf

    return (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
            tf.errors.AbortedError, tf.errors.FailedPreconditionError)


@dataclasses.dataclass
class Distributed:
    """The strategy of one process, and the training pieces that run on it."""

    strategy: object
    kind: str
    chief: bool = True
    task: str = "local"
    temp_dir: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    epoch: int | None = None             # the epoch being trained (0-based), for messages

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    @property
    def workers(self) -> int:
        resolver = getattr(self.strategy, "cluster_resolver", None)
        if resolver is None or not resolver.cluster_spec().as_dict():
            return 1
        return sum(len(v) for v in resolver.cluster_spec().as_dict().values())

    def describe(self) -> dict:
        return {"strategy": self.kind, "workers": self.workers, "replicas": self.replicas}

    # ----------------------------------------------------------------- model and resume

    def model_and_state(self, cfg, steps: int):
        """Build and compile the recipe's model under the strategy; on ``--resume`` the chief reads the
        checkpoint and every replica receives its weights, optimizer state and progress."""
        from rich.console import Console

        recipe = cfg.recipe
        self._check_same_settings(cfg, steps)
        with self.strategy.scope():
            model = build_model(recipe, cfg.weights, (cfg.image_size, cfg.image_size, 3), cfg.classes, cfg.user_model)
            compile_model(model, recipe, steps, recipe.epochs)
            model.optimizer.build(model.trainable_variables)
        if not cfg.resume:
            return model, State()

        targets = list(model.variables) + list(model.optimizer.variables)
        values, state, error = None, State(), None
        if self.chief:
            try:
                saved, state = load_checkpoint(cfg.run_dir)
                values = [np.asarray(v.numpy()) for v in list(saved.variables) + list(saved.optimizer.variables)]
                shapes = [tuple(v.shape) for v in targets]
                if [tuple(v.shape) for v in values] != shapes:
                    raise EdgeCifarError(f"{cfg.run_dir}: the checkpoint's model or optimizer does not match "
                                         f"recipe {recipe.name!r}; it cannot be resumed with this recipe")
            except EdgeCifarError as exc:
                error = exc
        stopper = state.stopper or {}
        header = [0.0 if error else 1.0, state.epochs_done, stopper.get("best", float("inf")),
                  stopper.get("best_epoch", -1), stopper.get("wait", 0), float(state.stopped_early)]
        header = self._from_chief([np.asarray(header, np.float64)])[0]
        if error is not None:
            raise error
        if header[0] != 1.0:
            raise EdgeCifarError(f"{self.task}: the chief could not resume the run (see the chief's message)")
        if values is None:
            values = [np.zeros(tuple(v.shape), np.float64) for v in targets]
        for var, value in zip(targets, self._from_chief(values)):
            var.assign(value.astype(var.dtype))
        if not self.chief:
            state = State(epochs_done=int(header[1]), stopped_early=bool(header[5]),
                          stopper={"best": float(header[2]), "best_epoch": int(header[3]), "wait": int(header[4])})
        where = cfg.run_dir if self.chief else "the chief's run"
        Console(stderr=True).print(f"resuming {where} after epoch {state.epochs_done}/{recipe.epochs} "
                                   f"on {self.replicas} replicas")
        return model, state

    def _check_same_settings(self, cfg, steps: int) -> None:
        """Every worker must run the same recipe settings, seed and data split, or the collectives would
        not line up: each replica contributes a digest of its settings and all compare the sum."""
        import hashlib

        settings = json.dumps([dataclasses.asdict(cfg.recipe), cfg.seed, cfg.val_size, steps, cfg.resume],
                              sort_keys=True, default=str)
        digest = hashlib.sha256(settings.encode()).hexdigest()
        mine = np.array([int(digest[i:i + 12], 16) for i in range(0, 48, 12)], np.float64)
        total = self._all_reduce("sum", [mine])[0]
        if not np.array_equal(total, mine * self.replicas):
            raise EdgeCifarError(f"{self.task}: the workers were started with different settings (recipe, "
                                 "--epochs, --batch-size, --seed, --val-size, --resume or the data size); start every "
                                 "worker with the same command apart from --task-index")

    def _from_chief(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Broadcast the chief's arrays to every replica: replica 0 (the chief's first device) contributes
        them, every other replica zeros, and an all-reduce sums them."""

        arrays = [np.asarray(a, np.float64) for a in arrays]
        return self._all_reduce("sum", arrays, [np.zeros_like(a) for a in arrays])

    def _all_reduce(self, op: str, first: list[np.ndarray], others: list[np.ndarray] | None = None):
        """All-reduce (``sum`` or ``mean``) float64 arrays over every replica of the cluster: replica 0
        contributes ``first``, the others ``others`` (default: ``first``). Returns this worker's result.
        The values become constants inside the replica function, so they live on the replica's device."""
        import tensorflow as tf

        others = first if others is None else others

        def replica_fn():
            ctx = tf.distribute.get_replica_context()
            is_first = tf.equal(ctx.replica_id_in_sync_group, 0)
            return ctx.all_reduce(op, [tf.where(is_first, tf.constant(a), tf.constant(b))
                                       for a, b in zip(first, others)])

        out = self.strategy.experimental_local_results(tf.function(lambda: self.strategy.run(replica_fn))())[0]
        return [np.asarray(t.numpy()) for t in out]

    # ----------------------------------------------------------------- training

    def fit_epoch(self, model, dataset, callback) -> dict:
        """One epoch over ``dataset`` (global batches). ``callback`` gets the Keras training hooks.
        Returns ``{"loss": ..., "accuracy": ...}`` like ``model.fit(...).history`` entries."""
        import tensorflow as tf

        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        options.deterministic = True
        batches = self.strategy.experimental_distribute_dataset(dataset.with_options(options))
        step = self._train_step(model)
        self.epoch = getattr(callback, "epoch", None)
        loss_sum = correct = seen = 0.0
        callback.on_train_begin()
        for i, batch in enumerate(batches):
            out = self.strategy.experimental_local_results(step(batch))[0]
            loss, right, n = (float(t) for t in out.numpy())
            loss_sum, correct, seen = loss_sum + loss * n, correct + right, seen + n
            callback.on_train_batch_end(i, {"loss": loss_sum / seen, "accuracy": correct / seen})
        callback.on_train_end()
        self._average_batchnorm_statistics(model)
        return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1)}

    def _average_batchnorm_statistics(self, model) -> None:
        """Average BatchNormalization's moving mean/variance over the replicas.

        Keras 3 creates them with ``aggregation="none"``, so each replica updates its own copy from its
        slice of the batch and the copies drift apart (tf-keras used MEAN). The moving averages are
        linear in the batch statistics, so averaging once per epoch equals averaging at every step."""
        import keras
        import tensorflow as tf

        stats = [v for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)
                 and layer.trainable for v in (layer.moving_mean, layer.moving_variance)]
        if not stats or self.replicas == 1:
            return

        def replica_fn():
            ctx = tf.distribute.get_replica_context()
            means = ctx.all_reduce("mean", [tf.identity(v.value) for v in stats])
            for v, m in zip(stats, means):
                v.assign(m)

        tf.function(lambda: self.strategy.run(replica_fn))()

    def _train_step(self, model):
        """A ``tf.function`` step: forward/backward on each replica's slice, gradients summed across
        replicas by the Keras optimizer; returns the global batch's (mean loss, correct, size)."""
        import tensorflow as tf

        cached = getattr(model, "_edgecifar_train_step", None)
        if cached is not None:
            return cached
        strategy, loss_fn = self.strategy, model.loss

        def replica_step(x, y):
            ctx = tf.distribute.get_replica_context()
            n = ctx.all_reduce("sum", tf.cast(tf.shape(x)[0], tf.float32))
            with tf.GradientTape() as tape:
                probs = model(x, training=True)
                loss = tf.reduce_sum(tf.cast(loss_fn.call(y, probs), tf.float32)) / tf.maximum(n, 1.0)
                if model.losses:  # weight penalties: the same on every replica, counted once in total
                    loss += tf.add_n([tf.cast(l, tf.float32) for l in model.losses]) / strategy.num_replicas_in_sync
            grads = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
            right = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, -1), tf.argmax(y, -1)), tf.float32))
            return ctx.all_reduce("sum", tf.stack([loss, right, tf.cast(tf.shape(x)[0], tf.float32)]))

        @tf.function(reduce_retracing=True)
        def step(batch):
            return strategy.run(replica_step, args=batch)

        model._edgecifar_train_step = step
        return step

    def evaluate(self, model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Validation loss and accuracy. Every worker evaluates the whole (small) validation set on its
        copy of the weights; the results are then averaged so all workers take the same decisions
        (early stopping) even if their hardware rounds differently."""
        from edgecifar.metrics import accuracy

        probs = predict(model, x)
        onehot = np.eye(int(model.output_shape[-1]), dtype=np.float32)[y]
        loss = float(np.mean(np.asarray(model.loss.call(onehot, probs))))
        if model.losses:
            loss += float(sum(np.asarray(l) for l in model.losses))
        acc = accuracy(probs, y)
        if self.kind == "multi-worker":
            loss, acc = (float(v) for v in self._all_reduce("mean", [np.array([loss, acc])])[0])
        return loss, acc


# --------------------------------------------------------------------------- the session around a run

@contextlib.contextmanager
def session(cfg) -> Iterator[tuple[object, Distributed | None]]:
    """Set up ``cfg.strategy`` (if any) and yield ``(cfg for this process, Distributed or None)``.

    A non-chief worker gets a copy of ``cfg`` pointing at a temporary run directory, deleted at the
    end. TensorFlow's errors about unreachable peers become one-line ``EdgeCifarError``s.
    """
    kind = getattr(cfg, "strategy", None)
    if not kind:
        yield cfg, None
        return
    if kind not in STRATEGIES:
        raise EdgeCifarError(f"unknown strategy {kind!r}; known: {', '.join(STRATEGIES)}")
    timeout = float(getattr(cfg, "collective_timeout", DEFAULT_TIMEOUT) or DEFAULT_TIMEOUT)
    chief, task, config = True, "local", None
    if kind == "multi-worker":
        config = read_tf_config()
        chief = is_chief(config)
        task = f"{config['task']['type']} {config['task']['index']}"
    strategy = make_strategy(kind, timeout)
    dist = Distributed(strategy, kind, chief=chief, task=task, timeout=timeout)
    if not chief:
        dist.temp_dir = Path(tempfile.mkdtemp(prefix=f"edgecifar-{task.replace(' ', '')}-"))
        cfg = dataclasses.replace(cfg, out=dist.temp_dir / "run", overwrite=True, progress=False)
    try:
        yield cfg, dist
    except _peer_errors() as exc:
        detail = " ".join(_tf_reason(str(getattr(exc, "message", exc))).split())
        detail = detail if len(detail) <= 200 else detail[:199].rsplit(" ", 1)[0] + "…"
        when, since = "before training", "its last checkpoint"
        if dist.epoch is not None:
            when, since = f"during epoch {dist.epoch + 1}", f"epoch {dist.epoch}" if dist.epoch else "the start"
        raise EdgeCifarError(
            f"{task}: lost contact with another worker {when} ({type(exc).__name__}: {detail}); the run "
            f"stopped. Restart every worker with the same command plus --resume to continue after {since}") from None
    finally:
        if dist.temp_dir is not None:
            shutil.rmtree(dist.temp_dir, ignore_errors=True)


def _tf_reason(message: str) -> str:
    """The reason in a TensorFlow runtime error, without the graph traceback and node annotations."""
    keep = []
    for line in message.splitlines():
        text = line.strip()
        if (not text or text.startswith(("Graph execution error", "Detected at node", "File ", "[[", "[Op:"))
                or line.startswith((" ", "\t")) and not keep):
            continue
        keep.append(text)
    reason = " ".join(keep) or message
    return re.sub(r"\{\{.*?\}\}|\[\[.*?\]\]|\[Op:\S*\]|\[type\.googleapis\S*", "", reason)
