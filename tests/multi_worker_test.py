"""Tests MultilevelModel under tf.distribute.MultiWorkerMirroredStrategy.

The tests run clusters of two worker processes on localhost
(tests/multi_worker_worker.py, one CPU replica each) and stops every worker
before they return, also when a worker fails or hangs.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
import numpy as np

import distribute_util
import keras_mlres as mlres

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "multi_worker_worker.py")
_NUM_WORKERS = 2
# Seconds a cluster may take before its workers are stopped: several times
# what a run takes on 2 busy cores.
_TIMEOUT = 240

_ADAM = {"class_name": "Adam", "config": {"learning_rate": 0.01}}
# The default scheme with a move finer after every epoch, so that each of
# its 3 levels trains within the 4 epochs.
_DEFAULT_SCHEME = ["default_scheme",
                   dict(mlres.DEFAULT_SCHEME, max_level_epochs=1), _ADAM, 4]
_V_CYCLE = ["v_cycle", {"num_levels": 2, "cycle": "V"}, _ADAM, 2]


def _free_ports(count):
    """`count` distinct localhost ports that are free now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _run_cluster(directory, *args):
    """Runs the workers with `args` until all end or one fails.

    A worker whose peer died waits in its next collective, so once a worker
    ends with an error, or at `_TIMEOUT`, the others are SIGKILLed.

    Returns:
        Each worker's return code, the indices of the workers this function
        killed, and each worker's output (stdout and stderr).
    """
    cluster = {"worker": [f"127.0.0.1:{port}"
                          for port in _free_ports(_NUM_WORKERS)]}
    workers, logs = [], []
    killed = []
    try:
        for index in range(_NUM_WORKERS):
            logs.append(open(os.path.join(directory, f"worker_{index}.log"),
                             "w+"))
            config = {"cluster": cluster,
                      "task": {"type": "worker", "index": index}}
            workers.append(subprocess.Popen(
                [sys.executable, _WORKER, "--output_dir", directory, *args],
                env=dict(os.environ, TF_CONFIG=json.dumps(config)),
                stdout=logs[-1], stderr=subprocess.STDOUT,
            ))
        deadline = time.monotonic() + _TIMEOUT
        while time.monotonic() < deadline:
            returncodes = [worker.poll() for worker in workers]
            if None not in returncodes or any(returncodes):
                break  # all ended, or one failed
            time.sleep(0.2)
    finally:
        for index, worker in enumerate(workers):
            if worker.poll() is None:
                worker.kill()
                killed.append(index)
            worker.wait()
        outputs = []
        for log in logs:
            log.seek(0)
            outputs.append(log.read())
            log.close()
    return [w.returncode for w in workers], killed, outputs


def _load(directory):
    """The arrays of every worker's output file, by worker."""
    arrays = []
    for index in range(_NUM_WORKERS):
        with np.load(os.path.join(directory, f"worker_{index}.npz")) as f:
            arrays.append(dict(f))
    return arrays


def _case_arrays(arrays, prefix):
    """The arrays named `prefix/<i>`, in order of i."""
    count = sum(key.rpartition("/")[0] == prefix for key in arrays)
    return [arrays[f"{prefix}/{i}"] for i in range(count)]


class MultiWorkerMirroredStrategyTest(absltest.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # One uninterrupted run serves both tests.
        cls._directory = tempfile.TemporaryDirectory(prefix="multi_worker_")
        cls.addClassCleanup(cls._directory.cleanup)
        cls.uninterrupted = os.path.join(cls._directory.name, "uninterrupted")
        os.mkdir(cls.uninterrupted)
        cls.returncodes, cls.killed, cls.outputs = _run_cluster(
            cls.uninterrupted, "--reference",
            "--cases", json.dumps([_DEFAULT_SCHEME, _V_CYCLE]))

    def _assert_succeeded(self, returncodes, killed, outputs):
        for index, (code, output) in enumerate(zip(returncodes, outputs)):
            self.assertEqual(
                (code, index in killed), (0, False),
                f"worker {index}:\n{output[-3000:]}")

    def test_two_workers_match_one_device(self):
        self._assert_succeeded(self.returncodes, self.killed, self.outputs)
        for output in self.outputs:
            results = distribute_util.parse_results(output)
            self.assertEqual(results["replicas"], _NUM_WORKERS)
            self.assertEqual(results["epochs"],
                             {"default_scheme": 4, "v_cycle": 2})
        workers = _load(self.uninterrupted)
        references = {**workers[0], **workers[1]}
        for name in ("default_scheme", "v_cycle"):
            with self.subTest(name):
                got = _case_arrays(workers[0], name)
                want = _case_arrays(references, f"reference/{name}")
                self.assertLen(got, len(want))
                self.assertNotEmpty(got)
                for a, b in zip(got, want):
                    self.assertLess(distribute_util.relative(a, b), 1e-5)
                # Mirrored: both workers hold the same states.
                for a, b in zip(got, _case_arrays(workers[1], name)):
                    np.testing.assert_array_equal(a, b)

    def test_killed_worker_resumes_from_backup(self):
        self._assert_succeeded(self.returncodes, self.killed, self.outputs)
        with tempfile.TemporaryDirectory(prefix="multi_worker_") as directory:
            backup = os.path.join(directory, "backup")
            args = ["--cases", json.dumps([_DEFAULT_SCHEME]),
                    "--backup_dir", backup]
            # Worker 0 dies in epoch 1 (on level 1), after the backup of
            # epoch 0; worker 1 then waits for it and is stopped.
            returncodes, killed, outputs = _run_cluster(
                directory, *args, "--kill_at", "0:1:2")
            self.assertEqual(returncodes[0], -9, outputs[0][-3000:])
            self.assertNotIn(0, killed)
            self.assertNotEqual(returncodes[1], 0, outputs[1][-3000:])
            self.assertFalse(
                os.path.exists(os.path.join(directory, "worker_0.npz")))
            for index in range(_NUM_WORKERS):
                metadata = os.path.join(
                    backup, f"worker_{index}", "training_metadata.json")
                with open(metadata) as f:
                    self.assertEqual(json.load(f)["epoch"], 1)
            returncodes, killed, outputs = _run_cluster(directory, *args)
            self._assert_succeeded(returncodes, killed, outputs)
            for output in outputs:
                self.assertEqual(
                    distribute_util.parse_results(output)["epochs"],
                    {"default_scheme": 3})  # epochs 1-3
            self.assertFalse(os.path.exists(os.path.join(backup, "worker_0")))
            resumed = _load(directory)
            uninterrupted = _load(self.uninterrupted)[0]
            want = _case_arrays(uninterrupted, "default_scheme")
            for worker in resumed:
                got = _case_arrays(worker, "default_scheme")
                self.assertLen(got, len(want))
                for a, b in zip(got, want):
                    np.testing.assert_array_equal(a, b)


if __name__ == "__main__":
    absltest.main()
