"""Data-parallel training (`experiments.train --strategy`), checked on CPU only (issue 8).

- MirroredStrategy over two logical CPU devices: on the same weights and the same global batch
  it gives the loss of the default strategy (evaluation: the global batch at once; a training
  step: the mean of the two per-replica losses, and the same updated weights as one gradient
  step on that mean), and `train --strategy mirrored` trains, stops and restarts from its backup.
- MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1: the tiny training
  completes, only the chief writes a run folder, and its log equals the mirrored run's (same
  global batch, same pairs: the explicit per-worker sharding of experiments.distribute).

Logical devices and the multi-worker strategy must be set up before TensorFlow starts, so
those parts run in fresh processes; this file is also the script those processes run.
Not covered here: real GPUs and real multi-machine clusters (see README, "Scaling out").
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from experiments import distribute
from experiments.config import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
LOSS_TOLERANCE = 1e-5  # float32 sums in another order: relative differences of ~1e-7 are expected
PER_REPLICA_BATCH = 16  # tiny.yaml's training.batch_size


def tiny_config(folder, librispeech_root, epochs=1):
    config = yaml.safe_load(open(REPO_ROOT / "experiments" / "configs" / "tiny.yaml"))
    config["output_dir"] = str(folder / "run")
    config["data"]["root"] = str(librispeech_root)
    config["training"]["epochs"] = epochs
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def environment(**extra):
    """This process's environment for a child process, without any TF_CONFIG of ours."""
    env = {name: value for name, value in os.environ.items() if name != "TF_CONFIG"}
    return {**env, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


# --- pure helpers (no TensorFlow) ----------------------------------------------------------------


def test_worker_role_from_tf_config(monkeypatch):
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert distribute.worker_role("multiworker") == distribute.Role(chief=False, index=1, workers=2)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["h:1"], **cluster},
                                                "task": {"type": "worker", "index": 0}}))
    assert distribute.worker_role("multiworker") == distribute.Role(chief=False, index=1, workers=3)
    assert distribute.worker_role("mirrored") == distribute.Role()  # TF_CONFIG only matters to multiworker
    for bad in ("", "{", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 5}})):
        monkeypatch.setenv("TF_CONFIG", bad)
        with pytest.raises(ConfigError, match="TF_CONFIG"):
            distribute.worker_role("multiworker")


def test_shards_are_the_replica_chunks_of_each_global_batch():
    table = pd.DataFrame({"row": range(24)})
    shards = [distribute.shard_table(table, 4, distribute.Role(index=i, workers=2))["row"].tolist() for i in (0, 1)]
    assert shards == [[0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19], [4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23]]
    assert distribute.whole_batches(table.iloc[:23], 8)["row"].tolist() == list(range(16))


def test_a_stale_backup_is_dropped(tmp_path):
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    distribute.drop_stale_backup(backup, 2)
    assert backup.is_dir()  # of the epoch the checkpoint continues from: kept
    distribute.drop_stale_backup(backup, 3)
    assert not backup.exists()


def test_a_non_chief_worker_starts_from_the_chiefs_state(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "log.csv").write_text("epoch,val_loss\n0,0.5\n")
    (run / "checkpoints" / "last.keras").write_text("weights")
    (run / "tower.keras").write_text("not copied")
    assert distribute.worker_run_dir(run, distribute.Role()) == run
    folder = distribute.worker_run_dir(run, distribute.Role(chief=False, index=1, workers=2))
    assert folder.parent == tmp_path / "tmp" and folder.name.endswith("worker1")
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == [
        "checkpoints", "checkpoints/last.keras", "log.csv"]


# --- MirroredStrategy over two logical CPU devices ---------------------------------------------


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory, librispeech_root):
    """Runs `mirrored_main` below in a fresh process; its figures, and the folder it trained in."""
    folder = tmp_path_factory.mktemp("mirrored")
    config = tiny_config(folder, librispeech_root, epochs=2)
    result = subprocess.run([sys.executable, __file__, "mirrored", str(config), str(librispeech_root)],
                            cwd=REPO_ROOT, env=environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), folder


def test_mirrored_loss_equals_the_default_strategy_loss(mirrored):
    figures, _ = mirrored
    print({name: value for name, value in figures.items() if name != "log"})  # the measured figures (-rP)
    assert figures["replicas"] == 2
    # Evaluation: one global batch of 32 pairs, same weights.
    assert figures["eval_mirrored"] == pytest.approx(figures["eval_default"], rel=LOSS_TOLERANCE)
    # One SGD step: the loss is the mean of the two replicas' losses (each replica normalises its
    # own 16 pairs in BatchNormalization), and the update is the gradient of that mean.
    assert figures["step_mirrored"] == pytest.approx(figures["step_default"], rel=LOSS_TOLERANCE)
    assert figures["weights_max_difference"] < 1e-6 < figures["weights_max_change"]


def test_mirrored_training_writes_the_run_and_resumes_from_its_backup(mirrored):
    figures, folder = mirrored
    assert figures["interrupted_code"] == 130 and figures["restarted_code"] == 0
    assert "global batch 32" in figures["log"]  # 16 pairs per replica x 2 replicas
    assert "resuming from" in figures["log"]  # the restart, without --resume, continued after epoch 0
    run = folder / "run"
    assert list(pd.read_csv(run / "log.csv")["epoch"]) == [0, 1]
    assert (run / "tower.keras").is_file() and not (run / "backup").exists()  # the backup goes when fit ends


# --- MultiWorkerMirroredStrategy: two workers on localhost -------------------------------------


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_workers_on_localhost_train_and_only_the_chief_writes(tmp_path, librispeech_root, mirrored):
    config = tiny_config(tmp_path, librispeech_root, epochs=1)
    (tmp_path / "tmp").mkdir()  # the workers' temporary folders go here
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    workers = []
    for index in (0, 1):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        log = open(tmp_path / f"worker{index}.log", "w")
        workers.append((subprocess.Popen(
            [sys.executable, "-m", "experiments.train", "--config", str(config), "--strategy", "multiworker",
             "--quiet"], cwd=REPO_ROOT, env=environment(TF_CONFIG=tf_config, TMPDIR=str(tmp_path / "tmp")),
            stdout=log, stderr=subprocess.STDOUT), log))
    try:
        codes = [process.wait(timeout=600) for process, _ in workers]
    finally:
        for process, log in workers:
            if process.poll() is None:  # a worker left waiting for a dead peer
                process.kill()
            log.close()
    logs = [(tmp_path / f"worker{index}.log").read_text() for index in (0, 1)]
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert "multiworker strategy: 2 replica(s), global batch 32" in logs[0]
    # One run folder, the chief's; the other worker's temporary copy is gone.
    assert [path.parent for path in tmp_path.rglob("log.csv")] == [tmp_path / "run"]
    assert list((tmp_path / "tmp").iterdir()) == []
    assert (tmp_path / "run" / "tower.keras").is_file() and not (tmp_path / "run" / "backup").exists()
    # Same global batches, same pairs, same per-replica batch: the mirrored run's first epoch exactly
    # (its second epoch was resumed, which is not bit-identical under a strategy: see README, "Scaling out").
    _, mirrored_folder = mirrored
    ours, theirs = pd.read_csv(tmp_path / "run" / "log.csv"), pd.read_csv(mirrored_folder / "run" / "log.csv")
    assert list(ours["epoch"]) == [0]
    for column in ("loss", "val_loss"):
        assert ours[column][0] == pytest.approx(theirs[column][0], rel=LOSS_TOLERANCE)


# --- the process behind the `mirrored` fixture ---------------------------------------------------


def mirrored_main(config_path, librispeech_root):
    """Prints one JSON line of figures; runs with two logical CPU devices, set before TensorFlow starts."""
    import io
    import logging

    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np

    from data_prep.manifest import scan_librispeech
    from data_prep.pairs import sample_pairs
    from data_prep.pipeline import pair_dataset
    from experiments import train as train_module
    from siamese.losses import ContrastiveLoss
    from siamese.model import build_siamese
    from sincnet_keras import build_encoder, load_preset

    strategy = distribute.make_strategy("mirrored")
    preset = load_preset("tiny")
    manifest = scan_librispeech(librispeech_root)
    pairs = sample_pairs(manifest, 2 * PER_REPLICA_BATCH, seed=0)
    audio = {"sample_rate": preset["sample_rate"], "window_s": preset["window_s"]}
    loss, rate = ContrastiveLoss(margin=1.0), 0.1

    def model():
        keras.utils.set_random_seed(0)
        siamese = build_siamese(build_encoder(preset))
        siamese.compile(optimizer=keras.optimizers.SGD(rate), loss=loss)
        return siamese

    default = model()
    start = default.get_weights()
    with strategy.scope():
        mirrored = model()
    mirrored.set_weights(start)
    global_batch = pair_dataset(manifest, pairs, batch_size=2 * PER_REPLICA_BATCH, **audio)
    replica_batches = distribute.distribute(strategy, pair_dataset(manifest, pairs, batch_size=PER_REPLICA_BATCH,
                                                                   **audio), distribute.Role())
    figures = {"replicas": strategy.num_replicas_in_sync,
               "eval_default": float(default.evaluate(global_batch, verbose=0)),
               "eval_mirrored": float(mirrored.evaluate(replica_batches, verbose=0))}

    # One training step by hand on the default model: the mean of the per-replica losses, one SGD update.
    (first, second), label = next(iter(global_batch))
    halves = [slice(0, PER_REPLICA_BATCH), slice(PER_REPLICA_BATCH, None)]
    with tf.GradientTape() as tape:
        step_loss = tf.add_n([loss(label[half], default([first[half], second[half]], training=True))
                              for half in halves]) / 2
    gradients = tape.gradient(step_loss, default.trainable_variables)
    expected = [variable.numpy() - rate * gradient.numpy()
                for variable, gradient in zip(default.trainable_variables, gradients)]
    history = mirrored.fit(replica_batches, epochs=1, steps_per_epoch=1, verbose=0)
    updated = [variable.numpy() for variable in mirrored.trainable_variables]
    figures.update(
        step_default=float(step_loss), step_mirrored=float(history.history["loss"][0]),
        weights_max_difference=float(max(np.abs(a - b).max() for a, b in zip(updated, expected))),
        weights_max_change=float(max(np.abs(a - b.numpy()).max()
                                     for a, b in zip(updated, default.trainable_variables))))

    # experiments.train itself: killed after its first epoch, then restarted with the same command.
    captured = io.StringIO()
    logging.basicConfig(level=logging.INFO, stream=captured, force=True)
    build_callbacks = train_module.build_callbacks

    def dying_after_one_epoch(*args):
        class Die(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == 1:
                    raise KeyboardInterrupt

        return build_callbacks(*args) + [Die()]

    train_module.build_callbacks = dying_after_one_epoch
    command = ["--config", str(config_path), "--strategy", "mirrored", "--quiet"]
    figures["interrupted_code"] = train_module.main(command)
    train_module.build_callbacks = build_callbacks
    figures["restarted_code"] = train_module.main(command)
    logging.shutdown()
    figures["log"] = captured.getvalue()
    print(json.dumps(figures))


if __name__ == "__main__":
    if sys.argv[1] == "mirrored":
        mirrored_main(Path(sys.argv[2]), Path(sys.argv[3]))
