"""A retrain that a kill or Ctrl-C does not lose: it goes on from its last finished epoch.

Keras' BackupAndRestore restores the weights, the optimizer and the epoch, but not what the
retrain keeps besides them: the best epoch so far, its weights and the history rows. It also
writes its weights and its epoch counter as two files, one after the other, so a kill between
the two resumes one epoch off. `RetrainBackup` keeps all of it, and commits each epoch with a
single rename of its state file, which names the weight files that belong to it.

One concern: that backup. It imports Keras, runs.py (whole-file writes) and runtime/compat.py (the
epoch a resumed fit starts at).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import keras

from runs import write_text
from runtime import compat

STATE_FILE = "state.json"  # the commit of each backed-up epoch: its presence means the retrain has begun


def has_begun(folder: Path) -> bool:
    """Whether a retrain backed up in `folder` finished an epoch in this or an earlier process."""
    return (Path(folder) / STATE_FILE).exists()


class RetrainBackup(keras.callbacks.Callback):
    """Keeps the weights of the epoch best on `objective` and restores them at the end, like EarlyStopping with
    restore_best_weights and no early stop; backs up every finished epoch in `folder` and resumes from it.

    `point` names what is trained (its hyperparameters): a backup of another point is not resumed.
    """

    def __init__(self, folder: Path, objective: str, mode: str, point: dict[str, Any]):
        super().__init__()
        self.folder, self.objective, self.mode = Path(folder), objective, mode
        self.state: dict[str, Any] = {"point": point, "epoch": 0, "rows": [], "best_epoch": None, "best_value": None}
        self.epoch_started = time.monotonic()  # fit() resets it as each epoch begins

    @property
    def state_file(self) -> Path:
        return self.folder / STATE_FILE

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not has_begun(self.folder):
            return
        saved = json.loads(self.state_file.read_text())
        if saved["point"] != self.state["point"]:
            # The search that resumed chose another point (say, among equal scores): this backup is not its.
            print(f"The retrain backed up in {self.folder} trained another point: retraining from the start.")
            shutil.rmtree(self.folder)
            return
        self.state = saved
        if not self.model.optimizer.built:  # its variables must exist to receive the saved ones
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(self.folder / self.state["latest"])
        compat.start_fit_at(self.model, self.state["epoch"])
        print(f"Resuming the retrain after epoch {self.state['epoch']} (backed up in {self.folder}).", flush=True)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = {name: float(value) for name, value in (logs or {}).items()}
        # Wall time of the epoch, validation included: history.csv then says what each epoch cost.
        logs["seconds"] = time.monotonic() - self.epoch_started
        state = self.state
        value = logs.get(self.objective, math.nan)
        if self._better(value, state["best_value"]):
            state["best_epoch"], state["best_value"] = epoch + 1, value
            state["best"] = self._save_weights(f"best-epoch{epoch + 1}")
        state["latest"] = self._save_weights(f"epoch{epoch + 1}")
        state["rows"].append({"epoch": epoch + 1, **logs})
        state["epoch"] = epoch + 1
        write_text(self.state_file, json.dumps(state))  # the commit: one rename
        for stale in self.folder.glob("*.weights.h5"):
            if stale.name not in (state.get("best"), state["latest"]):  # no best while the objective is NaN
                stale.unlink()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.state["best_epoch"] is not None:
            self.model.load_weights(self.folder / self.state["best"])
            # With use_ema the kept epoch was validated on the averaged weights (SwapEMAWeights), which the
            # file holds in the optimizer's state: the model gets those, as fit() gives them after the last epoch.
            if getattr(self.model.optimizer, "use_ema", False):
                self.model.optimizer.finalize_variable_values(self.model.trainable_variables)

    @property
    def rows(self) -> list[dict[str, float]]:
        """One row per epoch, those before a resume included."""
        return self.state["rows"]

    @property
    def best_epoch(self) -> int:
        """The epoch whose weights the model holds after training (the last one if the objective was never a number)."""
        return self.state["best_epoch"] or self.state["epoch"]

    def _better(self, value: float, best: float | None) -> bool:
        if math.isnan(value):
            return False
        if best is None or math.isnan(best):
            return True
        return value < best if self.mode == "min" else value > best

    def _save_weights(self, stem: str) -> str:
        """Weights and optimizer state to `stem`.weights.h5, written whole (temporary file, then rename)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{stem}.weights.h5"
        partial = self.folder / f"{stem}.partial.weights.h5"
        self.model.save_weights(partial)
        partial.replace(self.folder / name)
        return name
