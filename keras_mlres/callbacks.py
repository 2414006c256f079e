"""Keras callbacks: timing of training runs, and kill-safe backups."""

import json
import os
import shutil
import statistics
import tempfile
import time

import keras

_TRAIN, _TEST = 0, 1


class WallClock(keras.callbacks.Callback):
    """Records the wall time of each epoch end and estimates compile time.

    At `on_train_begin` the clock starts (`time.perf_counter()`); at each
    epoch end (after validation) it appends the seconds elapsed since then to
    `epoch_times`. These times include everything `fit` does: tracing and
    XLA compilation, the input pipeline, validation and the other callbacks.

    Compile time is estimated from batch timings. Tracing and XLA compilation
    of a step happen in the first batch of a pass over the data: the first
    training batch, the first validation batch and, with nested iteration,
    the first batch after each move to a finer level (the training step is
    rebuilt for the new level). For each training epoch and each validation
    pass the callback measures the intervals between consecutive batch
    starts and takes the excess of the first interval over the median of the
    later ones, `first - median(later)`. Every pass's first batch also pays
    a routine start-up (a new dataset iterator fills its shuffle buffer,
    about 20 ms for 20000 points); the smallest excess among the passes of
    the same kind after the first epoch's is taken as that routine cost. A
    pass's compile time is its excess less the routine cost, or 0 if
    negative. This charges recompiles to the epoch they happen in, which an
    estimate from the first epoch alone (first epoch minus a typical epoch)
    would miss or confuse with the different cost of epochs on different
    levels. A pass of fewer than 3 batches gives no estimate (0). If every
    pass after the first compiled, the routine cost is overestimated and the
    compile time underestimated. The estimates use all epochs so far, so
    read them after `fit`.

    With `steps_per_execution > 1` the batch hooks, and so the intervals,
    cover one execution of several steps each; the estimate is the same.
    Only `on_*_batch_begin` hooks are used, so Keras keeps dispatching the
    batch-end callbacks asynchronously and the clock does not slow training.

    Attributes:
        epoch_times: Seconds from the start of `fit` to each epoch end.
        compile_times: Estimated compile seconds spent in each epoch
            (its training and its validation pass).
        compile_time: Estimated total compile seconds (their sum).
        first_epoch_time: Seconds of the first epoch (None before it ends).
        epoch_times_without_compile: `epoch_times` minus the compile time
            spent up to each epoch end.

    Example:

    ```python
    clock = keras_mlres.callbacks.WallClock()
    history = model.fit(train, epochs=10, validation_data=val,
                        callbacks=[clock])
    print(clock.epoch_times[-1], clock.compile_time)
    ```
    """

    def __init__(self):
        super().__init__()
        self.epoch_times = []
        self._start = None
        self._batch_starts = []
        # Per epoch, [train excess, test excess]; None where not measured.
        self._excesses = []
        self._epoch_excess = [None, None]

    @property
    def compile_times(self):
        routine = []
        for kind in (_TRAIN, _TEST):
            later = [
                epoch[kind]
                for epoch in self._excesses[1:]
                if epoch[kind] is not None
            ]
            routine.append(max(0.0, min(later)) if later else 0.0)
        return [
            sum(
                max(0.0, excess - cost)
                for excess, cost in zip(epoch, routine)
                if excess is not None
            )
            for epoch in self._excesses
        ]

    @property
    def compile_time(self):
        return sum(self.compile_times)

    @property
    def first_epoch_time(self):
        return self.epoch_times[0] if self.epoch_times else None

    @property
    def epoch_times_without_compile(self):
        spent, times = 0.0, []
        for elapsed, compiled in zip(self.epoch_times, self.compile_times):
            spent += compiled
            times.append(elapsed - spent)
        return times

    def on_train_begin(self, logs=None):
        self.epoch_times = []
        self._excesses = []
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_excess = [None, None]
        self._batch_starts = []

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_starts.append(time.perf_counter())

    def on_test_begin(self, logs=None):
        # Validation runs inside the epoch: close the training pass first.
        self._close_pass(_TRAIN)

    def on_test_batch_begin(self, batch, logs=None):
        self._batch_starts.append(time.perf_counter())

    def on_test_end(self, logs=None):
        self._close_pass(_TEST)

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self._close_pass(_TRAIN)  # Without validation; else a no-op.
        self.epoch_times.append(now - self._start)
        self._excesses.append(self._epoch_excess)

    def _close_pass(self, kind):
        starts = self._batch_starts
        intervals = [b - a for a, b in zip(starts, starts[1:])]
        if len(intervals) >= 2:
            excess = intervals[0] - statistics.median(intervals[1:])
            self._epoch_excess[kind] = excess
        self._batch_starts = []


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` whose backups survive a kill.

    Keras writes the backup's weights file and its metadata (the epoch) in
    place, one after the other, so a process killed while it writes leaves
    a truncated file, or new weights beside an old epoch. This callback
    writes each backup into a fresh directory and renames it into place:
    `backup_dir/checkpoint` always holds a complete, consistent backup (the
    previous one until the new one is complete). A backup holds everything
    `save_weights` writes: for a `MultilevelModel` the fine network, every
    level's optimizer state, `work` and the nested-iteration schedule.

    Resuming is exact (the same final weights as an uninterrupted run) with
    `save_freq="epoch"` when each epoch's data order does not depend on the
    epochs before it (no shuffling, or a shuffle seeded per epoch): a killed
    epoch is run again from its start. With an integer `save_freq`, Keras
    restores the weights of the last backup but still starts that epoch from
    its first batch.

    Args:
        backup_dir: As in `keras.callbacks.BackupAndRestore`; a local path.
            Training stops at its start (`NotADirectoryError`) if it is a
            file or under a file.
        save_freq: As in `keras.callbacks.BackupAndRestore`.
        delete_checkpoint: As in `keras.callbacks.BackupAndRestore`.

    Example:

    >>> model.fit(train_ds, epochs=50, callbacks=[
    ...     keras_mlres.callbacks.BackupAndRestore("/tmp/backup")])
    """

    _CHECKPOINT = "checkpoint"

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True):
        super().__init__(
            backup_dir, save_freq=save_freq, delete_checkpoint=delete_checkpoint
        )
        checkpoint = os.path.join(backup_dir, self._CHECKPOINT)
        self._weights_path = os.path.join(checkpoint, "latest.weights.h5")
        self._training_metadata_path = os.path.join(
            checkpoint, "training_metadata.json"
        )

    def on_train_begin(self, logs=None):
        self._check_backup_dir()
        self._recover()
        super().on_train_begin(logs)

    def _check_backup_dir(self):
        """Raises if a file stands where `backup_dir` must be a directory.

        Otherwise the first backup, after a whole epoch of training, fails.
        """
        path = os.path.abspath(self.backup_dir)
        while not os.path.exists(path):
            path = os.path.dirname(path)
        if not os.path.isdir(path):
            raise NotADirectoryError(
                f"backup_dir={self.backup_dir!r} cannot be a directory: "
                f"'{path}' is a file. Pass a backup_dir that is neither a "
                "file nor under one."
            )

    def _recover(self):
        """Finishes or discards a backup that a kill interrupted."""
        if not os.path.isdir(self.backup_dir):
            return
        checkpoint = os.path.join(self.backup_dir, self._CHECKPOINT)
        for name in sorted(os.listdir(self.backup_dir)):
            path = os.path.join(self.backup_dir, name)
            if name.startswith(f"{self._CHECKPOINT}.partial-"):
                shutil.rmtree(path)  # killed while writing: incomplete
            elif name.startswith(f"{self._CHECKPOINT}.previous-"):
                if os.path.exists(checkpoint):
                    shutil.rmtree(path)
                else:  # killed between the two renames of `_save_model`
                    os.rename(path, checkpoint)

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        checkpoint = os.path.join(self.backup_dir, self._CHECKPOINT)
        partial = tempfile.mkdtemp(
            prefix=f"{self._CHECKPOINT}.partial-", dir=self.backup_dir
        )
        self.model.save_weights(
            os.path.join(partial, "latest.weights.h5"), overwrite=True
        )
        metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
        with open(os.path.join(partial, "training_metadata.json"), "w") as f:
            json.dump(metadata, f)
        _sync_directory(partial)
        previous = None
        if os.path.exists(checkpoint):
            previous = f"{partial.replace('.partial-', '.previous-')}"
            os.rename(checkpoint, previous)
        os.rename(partial, checkpoint)
        _sync_directory(self.backup_dir)
        if previous:
            shutil.rmtree(previous)


def _sync_directory(path):
    """Flushes a directory's files and entries to disk before a rename."""
    for name in os.listdir(path):
        child = os.path.join(path, name)
        if os.path.isfile(child):
            with open(child, "rb") as f:
                os.fsync(f.fileno())
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
