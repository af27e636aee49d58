"""Resuming: RetrainBackup (a retrain cut off after an epoch goes on from it, keeps the best epoch, and never
resumes another point), and the run clock that adds up the time of every process that ran a run."""

from __future__ import annotations

import json
import time

import keras
import numpy as np
import pytest
from keras import layers

from pipeline.resume import RetrainBackup
from runs import CLOCK_FILE, Stopwatch

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 6)).astype("float32")
Y = np.eye(2, dtype="float32")[(X[:, 0] + 0.5 * RNG.normal(size=64) > 0).astype(int)]
POINT = {"units": 8, "learning_rate": 0.01}


def fit(folder, point=POINT, epochs=6, stop_after=None):
    """A tiny model trained with the backup; `stop_after` epochs, a KeyboardInterrupt as Ctrl-C would raise it."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6,))
    outputs = layers.Dense(2, activation="softmax")(layers.Dense(point["units"], activation="relu")(inputs))
    model = keras.Model(inputs, outputs)
    auc = keras.metrics.AUC(name="auc", multi_label=True, num_labels=2)
    model.compile(keras.optimizers.RMSprop(point["learning_rate"]), "categorical_crossentropy", metrics=[auc])
    backup = RetrainBackup(folder, "val_auc", "max", point)

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if stop_after is not None and epoch + 1 == stop_after:
                raise KeyboardInterrupt

    model.fit(
        X, Y, validation_data=(X[:32], Y[:32]), epochs=epochs, batch_size=16, callbacks=[backup, Stop()], verbose=0
    )
    return model, backup


@pytest.mark.e2e
def test_an_interrupted_retrain_goes_on_from_its_last_epoch_and_keeps_the_best(tmp_path, capsys):
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path, stop_after=3)
    before = json.loads((tmp_path / "state.json").read_text())
    assert before["epoch"] == 3 and len(before["rows"]) == 3
    assert sorted(path.name for path in tmp_path.glob("*.weights.h5")) == sorted({before["best"], before["latest"]})

    model, backup = fit(tmp_path)
    assert "Resuming the retrain after epoch 3" in capsys.readouterr().out
    assert [row["epoch"] for row in backup.rows] == [1, 2, 3, 4, 5, 6]
    assert backup.rows[:3] == before["rows"]
    aucs = [row["val_auc"] for row in backup.rows]
    assert backup.best_epoch == int(np.argmax(aucs)) + 1
    # The model holds the best epoch's weights, whichever side of the stop that epoch was on.
    kept = model.evaluate(X[:32], Y[:32], verbose=0, return_dict=True)["auc"]
    assert kept == pytest.approx(max(aucs), abs=1e-6)


@pytest.mark.e2e
def test_a_backup_of_another_point_is_not_resumed(tmp_path, capsys):
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path, stop_after=2)
    _, backup = fit(tmp_path, point={**POINT, "units": 16}, epochs=3)
    assert "trained another point: retraining from the start" in capsys.readouterr().out
    assert [row["epoch"] for row in backup.rows] == [1, 2, 3]
    assert json.loads((tmp_path / "state.json").read_text())["point"]["units"] == 16


def test_epochs_whose_objective_is_not_a_number_are_backed_up_without_a_best(tmp_path):
    backup = RetrainBackup(tmp_path, "val_auc", "max", POINT)
    backup.set_model(keras.Sequential([keras.Input((2,)), layers.Dense(2)]))
    backup.on_epoch_end(0, {"val_auc": float("nan"), "loss": 0.7})
    backup.on_epoch_end(1, {"val_auc": 0.8, "loss": 0.6})
    assert backup.best_epoch == 2 and [row["epoch"] for row in backup.rows] == [1, 2]
    assert sorted(path.name for path in tmp_path.glob("*.weights.h5")) == [
        "best-epoch2.weights.h5",
        "epoch2.weights.h5",
    ]


@pytest.mark.e2e
def test_with_weight_averaging_the_kept_model_is_the_average_validation_scored(tmp_path):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, layers.Dense(2, activation="softmax")(layers.Dense(8, activation="relu")(inputs)))
    model.compile(keras.optimizers.RMSprop(0.05, use_ema=True, ema_momentum=0.8), "categorical_crossentropy")
    backup = RetrainBackup(tmp_path, "val_loss", "min", POINT)
    history = model.fit(
        X, Y, validation_data=(X[:32], Y[:32]), epochs=5, batch_size=16, verbose=0,
        callbacks=[keras.callbacks.SwapEMAWeights(), backup],
    )  # fmt: skip
    kept = history.history["val_loss"][backup.best_epoch - 1]
    assert kept == min(history.history["val_loss"])
    # The model now holds the averaged weights of the kept epoch: it scores exactly what validation recorded.
    assert model.evaluate(X[:32], Y[:32], verbose=0) == pytest.approx(kept, rel=1e-5)
    raw = np.concatenate([w.ravel() for w in model.get_weights()])
    model.load_weights(tmp_path / backup.state["best"])
    assert not np.allclose(raw, np.concatenate([w.ravel() for w in model.get_weights()]))  # not the raw weights


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_resumed_runs_clock_adds_up_every_process_and_gives_the_stopped_phase_its_time(tmp_path):
    now = FakeTime()
    killed = Stopwatch(now)
    killed.keep_in(tmp_path, every=None)
    for now.now, phase in ((10.0, "data"), (110.0, "search")):
        killed.lap(phase)
    now.now = 150.0  # killed 40 s into its final training, after the saver's last record
    killed.save()

    now.now = 1000.0
    resumed = Stopwatch(now)
    resumed.keep_in(tmp_path, every=None)
    for now.now, phase in ((1005.0, "data"), (1006.0, "search"), (1100.0, "final_training")):
        resumed.lap(phase)
    now.now = 1101.0
    assert resumed.total() == {"data": 15.0, "search": 101.0, "final_training": 134.0, "total": 251.0}
    assert resumed.processes == 2
    resumed.close()
    recorded = json.loads((tmp_path / CLOCK_FILE).read_text())
    assert recorded == {
        "phases": {"data": 15.0, "search": 101.0, "final_training": 134.0},
        "total": 251.0,
        "processes": 2,
    }


def test_the_clock_records_itself_while_a_phase_runs_and_stops_when_closed(tmp_path):
    clock = Stopwatch()
    clock.keep_in(tmp_path, every=0.02)
    first = json.loads((tmp_path / CLOCK_FILE).read_text())["total"]
    deadline = time.monotonic() + 10
    while json.loads((tmp_path / CLOCK_FILE).read_text())["total"] == first and time.monotonic() < deadline:
        time.sleep(0.01)
    assert json.loads((tmp_path / CLOCK_FILE).read_text())["total"] > first  # no lap: the saver wrote it
    clock.close()
    closed = (tmp_path / CLOCK_FILE).read_text()
    time.sleep(0.1)
    assert (tmp_path / CLOCK_FILE).read_text() == closed
