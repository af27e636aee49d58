"""TensorBoard logs, read back with TensorBoard's own reader: every trial's HParams and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator
from tensorboard.plugins.hparams import metadata

from pipeline import training


def read_events(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={TENSORS: 0})
    events.Reload()
    return events


def session_hparams(folder: Path) -> tuple[str, dict[str, float | str | bool]]:
    """The HParams session written in `folder`: its name and hyperparameter values (number, text or bool)."""
    content = read_events(folder).SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content
    start = metadata.parse_session_start_info_plugin_data(content)
    return start.group_name, {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}


def epoch_values(folder: Path, tag: str) -> list[float]:
    return [float(tf.make_ndarray(event.tensor_proto)) for event in read_events(folder).Tensors(tag)]


@pytest.fixture
def run_dir(tiny_runs) -> Path:
    return tiny_runs.search  # a random search of 3 one-epoch trials, retrained 2 epochs


def test_every_trial_logs_its_hyperparameters_and_validation_metric(run_dir):
    trials = pd.read_csv(run_dir / "trials.csv", dtype={"trial_id": str})
    assert len(trials) == 3
    for trial in trials.itertuples():
        folder = run_dir / "tensorboard" / trial.trial_id / "execution0"
        name, hparams = session_hparams(folder)
        assert name == trial.trial_id
        assert hparams["learning_rate"] == pytest.approx(trial.learning_rate)
        assert hparams["conv_blocks"] == trial.conv_blocks and hparams["dropout"] == pytest.approx(trial.dropout)
        # The default objective: the exact validation log loss, logged beside Keras' own metrics.
        val_log_loss = epoch_values(folder / "validation", "epoch_log_loss")
        assert len(val_log_loss) == trial.epochs_run
        assert min(val_log_loss) == pytest.approx(trial.objective, abs=1e-6)


def test_final_training_is_logged_beside_the_trials(run_dir):
    """The first finalist (the baseline's point) logs as "final", the others beside it under their trial ids."""
    finalists = json.loads((run_dir / "metrics.json").read_text())["finalists"]
    for rank, finalist in enumerate(finalists):
        folder = run_dir / "tensorboard" / ("final" if rank == 0 else f"final-finalist-{finalist['trial_id']}")
        name, hparams = session_hparams(folder)
        point = finalist["point"]
        assert name == folder.name and hparams == pytest.approx(point)
        assert hparams["pooling"] == point["pooling"] and hparams["batch_norm"] is point["batch_norm"]
        assert len(epoch_values(folder / "validation", "epoch_auc")) == 2  # --final-epochs 2
        assert len(epoch_values(folder / "train", "epoch_loss")) == 2


def test_logging_can_be_switched_off():
    assert training.tensorboard_logging(False, Path("unused")) == []
    (callback,) = training.tensorboard_logging(True, Path("logs"))
    assert callback.log_dir == "logs"
