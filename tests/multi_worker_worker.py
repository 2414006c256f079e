"""One worker of the localhost cluster that tests/multi_worker_test.py runs.

`TF_CONFIG` names the cluster and this worker's task. The worker trains each
case of `--cases` (a JSON list of `[name, options, optimizer, epochs]`, see
`distribute_util.train`) under `tf.distribute.MultiWorkerMirroredStrategy`,
writes the final states to `--output_dir`/worker_<index>.npz (arrays named
`<case>/<i>`) and prints a RESULTS line with the epochs each case trained.

With `--reference` each worker then trains its share of the cases (every
`num_workers`-th) on one device, as arrays named `reference/<case>/<i>`.
With `--backup_dir` each case trains under `keras.callbacks.BackupAndRestore`
in a directory of the worker's own, and with `--kill_at WORKER:EPOCH:BATCH`
that worker SIGKILLs itself as that batch begins.
"""

import argparse
import json
import os
import signal
import threading
import time


def _exit_with_parent(parent):
    """Ends this worker once the process that started it is gone.

    A worker whose peer is gone waits in its next collective; without its
    test to stop it, it would wait forever.
    """
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


threading.Thread(
    target=_exit_with_parent, args=(os.getppid(),), daemon=True
).start()

import tensorflow as tf  # noqa: E402

# The workers share the machine's cores: one thread each keeps them from
# preempting each other in the middle of a collective.
tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.threading.set_intra_op_parallelism_threads(1)
# The strategy starts this worker's server, which must happen before
# TensorFlow runs anything (keras_mlres's import and the network's seeding).
_STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()

import keras  # noqa: E402
import numpy as np  # noqa: E402

import distribute_util  # noqa: E402


class _KillAt(keras.callbacks.Callback):
    """SIGKILLs this process as batch `batch` of epoch `epoch` begins."""

    def __init__(self, epoch, batch):
        super().__init__()
        self._at = (epoch, batch)
        self._epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self._epoch, batch) == self._at:
            os.kill(os.getpid(), signal.SIGKILL)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--cases", required=True)
    parser.add_argument("--reference", action="store_true")
    parser.add_argument("--backup_dir")
    parser.add_argument("--kill_at")
    args = parser.parse_args()
    config = json.loads(os.environ["TF_CONFIG"])
    index = config["task"]["index"]
    num_workers = len(config["cluster"]["worker"])
    callbacks = []
    if args.backup_dir:
        # Keras's backups are per process: workers on one machine must not
        # share a directory (each writes it, and deletes it at the end).
        callbacks.append(keras.callbacks.BackupAndRestore(
            os.path.join(args.backup_dir, f"worker_{index}")))
    if args.kill_at:
        worker, epoch, batch = map(int, args.kill_at.split(":"))
        if worker == index:
            callbacks.append(_KillAt(epoch, batch))
    cases = json.loads(args.cases)
    arrays, epochs_trained = {}, {}
    for name, options, optimizer, epochs in cases:
        states, history = distribute_util.train(
            _STRATEGY, options, optimizer, epochs=epochs, callbacks=callbacks)
        arrays.update({f"{name}/{i}": a for i, a in enumerate(states)})
        epochs_trained[name] = len(history["loss"])
    if args.reference:
        for name, options, optimizer, epochs in cases[index::num_workers]:
            states, _ = distribute_util.train(
                tf.distribute.get_strategy(), options, optimizer,
                epochs=epochs)
            arrays.update(
                {f"reference/{name}/{i}": a for i, a in enumerate(states)})
    output = os.path.join(args.output_dir, f"worker_{index}.npz")
    np.savez(output, **arrays)
    distribute_util.print_results({
        "replicas": _STRATEGY.num_replicas_in_sync,
        "epochs": epochs_trained,
    })


if __name__ == "__main__":
    main()
