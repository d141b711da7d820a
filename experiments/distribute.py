"""Data-parallel training with tf.distribute: `experiments.train --strategy {default,mirrored,multiworker}`.

- `default`: one device, exactly the training of before (no strategy is created).
- `mirrored`: `tf.distribute.MirroredStrategy` over every GPU of this machine, or, with no GPU, over its
  logical CPU devices (one unless the process configured more, as the tests do).
- `multiworker`: `tf.distribute.MultiWorkerMirroredStrategy` over the machines named in the `TF_CONFIG`
  environment variable, each running the same command with its own `task.index`.

Batch semantics: `training.batch_size` is the batch of **one replica**. A step trains on
`batch_size x replicas` pairs (the global batch); an epoch still holds `pairs_per_epoch` pairs, so
it has `replicas` times fewer steps. The learning rate is not rescaled. The pair table of every
epoch is drawn in global batches; each global batch is cut into per-replica chunks of `batch_size`
rows, and each worker reads only its own chunks (explicit sharding of the table, before any audio
is decoded), so step `s` of a distributed run trains on exactly the pairs of step `s` of a
single-device run with `batch_size x replicas`.

Only the chief (`TF_CONFIG` task `chief`, or worker 0 when there is none) writes the run folder.
The other workers run the same code against a private temporary folder (seeded from the chief's
run folder when it is visible, i.e. on a shared filesystem) and delete it when training ends.
`keras.callbacks.BackupAndRestore` backs the training state up every epoch in `<run>/backup`; a
job restarted after a worker died continues from it without `--resume`.
"""

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.config import ConfigError

logger = logging.getLogger("experiments.distribute")

STRATEGIES = ("default", "mirrored", "multiworker")

# What a non-chief worker copies from the chief's run folder to continue where it stopped.
RESUMABLE = ("manifests", "log.csv", "checkpoints", "backup", "frontend.keras")


@dataclass(frozen=True)
class Role:
    """This process's place in the job: `chief` writes the run folder; `index` of `workers` pipelines."""

    chief: bool = True
    index: int = 0
    workers: int = 1


def worker_role(strategy_name):
    """The role from `TF_CONFIG` (read without TensorFlow, so a bad one fails before any work)."""
    if strategy_name != "multiworker":
        return Role()
    text = os.environ.get("TF_CONFIG", "")
    if not text:
        raise ConfigError("--strategy multiworker needs the TF_CONFIG environment variable (cluster and task)")
    try:
        tf_config = json.loads(text)
        cluster, task = tf_config["cluster"], tf_config["task"]
        task_type, index = task["type"], int(task["index"])
        count = len(cluster[task_type])
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"TF_CONFIG: expected {{'cluster': {{...}}, 'task': {{'type', 'index'}}}} ({error})") from None
    if task_type not in ("chief", "worker") or not 0 <= index < count:
        raise ConfigError(f"TF_CONFIG: task {task_type}:{index} is not one of the cluster's chief or workers")
    # Input pipelines are numbered over chief then workers, as MultiWorkerMirroredStrategy numbers them.
    chiefs = len(cluster.get("chief", []))
    pipeline = index if task_type == "chief" else chiefs + index
    chief = task_type == "chief" or (task_type == "worker" and index == 0 and not chiefs)
    return Role(chief=chief, index=pipeline, workers=chiefs + len(cluster.get("worker", [])))


def make_strategy(name):
    """The tf.distribute strategy for `name`; None for `default` (no strategy at all, as before)."""
    if name not in STRATEGIES:
        raise ConfigError(f"--strategy must be one of {list(STRATEGIES)}, got {name!r}")
    if name == "default":
        return None
    import tensorflow as tf

    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    patch_keras_for_multiworker()
    return tf.distribute.MultiWorkerMirroredStrategy()


def patch_keras_for_multiworker():
    """Two fixes Keras 3.15's TensorFlow trainer needs before it can fit under MultiWorkerMirroredStrategy.

    Both are keras-team/keras#20585 (open): `fit` first reduces a whole `(inputs, labels)` batch of
    per-replica values with one `strategy.reduce` call, which the multi-worker strategy cannot do,
    only to learn the input shapes; and each step's logs are reduced with `axis=0`, which fails
    on scalars. Here the shapes come from this worker's own replica batch (no cross-worker call),
    and the logs (scalars) are averaged over all replicas of all workers, as on one machine.
    Process-wide, so it is applied only when the multi-worker strategy is made.
    """
    from keras import tree
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, "_multiworker_patched", False):
        return
    reduce_per_replica = trainer.reduce_per_replica

    def reduce_logs(values, strategy, reduction="auto"):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, batches in iterator:
                local = self.distribute_strategy.experimental_local_results
                data_batch = tree.map_structure(lambda value: local(value)[0], next(batches))
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    trainer.reduce_per_replica = reduce_logs
    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer._multiworker_patched = True


def worker_run_dir(run_dir, role):
    """Where this worker writes: the run folder itself on the chief, a private temporary folder elsewhere.

    The folder's name is fixed by the run folder and the worker, so a restarted worker finds its
    own backup even without a shared filesystem; with one, the chief's resumable files replace it.
    """
    if role.chief:
        return run_dir
    digest = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"sincnet-{run_dir.name}-{digest}-worker{role.index}"
    if (run_dir / "log.csv").is_file():  # the chief's folder is visible here: continue from its state
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name in RESUMABLE:
            source = run_dir / name
            if source.is_dir():
                shutil.copytree(source, folder / name)
            elif source.is_file():
                shutil.copy2(source, folder / name)
    logger.info("worker %d writes to %s (the chief writes %s)", role.index, folder, run_dir)
    return folder


def backup_epoch(backup_dir):
    """The epoch count a BackupAndRestore folder holds, or None when it holds no whole backup."""
    try:
        return int(json.loads((Path(backup_dir) / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def drop_stale_backup(backup_dir, epochs_done):
    """Keeps the backup only when it is of the epoch the checkpoint and log continue from.

    The backup is written after `last.keras`, so a kill between the two leaves it one epoch
    behind; the checkpoint (written whole, with the log) is then the truth, as on one device.
    """
    backup_dir = Path(backup_dir)
    if backup_dir.exists() and backup_epoch(backup_dir) != epochs_done:
        logger.info("dropping %s: it does not hold epoch %d", backup_dir, epochs_done)
        shutil.rmtree(backup_dir)


def shard_table(table, chunk_rows, role):
    """This worker's rows of a table read in chunks of `chunk_rows` (one replica's batch).

    Chunk `k` goes to input pipeline `k % workers`; each pipeline hands its chunks in turn to its
    local replicas, so step `s` covers global chunks `s x replicas ...`: the same pairs as a
    global batch on one device. A one-worker job keeps the whole table.
    """
    if role.workers == 1:
        return table
    chunk = np.arange(len(table)) // chunk_rows
    return table[chunk % role.workers == role.index].reset_index(drop=True)


def whole_batches(table, global_rows):
    """The table cut to whole global batches: every replica then gets a batch at every step."""
    return table.iloc[:len(table) // global_rows * global_rows].reset_index(drop=True)


def distribute(strategy, dataset, role):
    """A per-worker dataset of per-replica batches (`shard_table`'s rows), handed to the strategy as it is."""

    def this_workers(context):
        # The rows were chosen from TF_CONFIG by `worker_role`; TensorFlow must number the workers the same way.
        if (context.num_input_pipelines, context.input_pipeline_id) != (role.workers, role.index):
            raise RuntimeError(f"input pipeline {context.input_pipeline_id} of {context.num_input_pipelines}, "
                               f"but TF_CONFIG makes this worker {role.index} of {role.workers}")
        return dataset

    return strategy.distribute_datasets_from_function(this_workers)
