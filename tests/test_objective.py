"""bench/experiments/objective.py: ensembles of the retrained points, scored on validation against the best alone."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

# bench/ scripts are scripts, not modules: load this one from its file.
_SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "experiments" / "objective.py"
_SPEC = importlib.util.spec_from_file_location("objective", _SCRIPT)
objective = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(objective)


def test_ensembles_are_the_mean_of_the_top_points_scored_against_the_best(capsys):
    labels = np.array([0, 0, 1, 1])
    probabilities = pd.DataFrame(
        {
            "patient": ["a", "b", "c", "d"],
            "label": labels,
            "p_7": [0.6, 0.1, 0.4, 0.9],  # the best point: one pair ranked wrong
            "p_3": [0.0, 0.2, 0.8, 0.9],  # ranks every pair right
        }
    )
    objective.print_ensembles(probabilities, ["7", "3"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()[:1] in ("1", "2")]
    mean = np.array([0.3, 0.15, 0.6, 0.9])
    loss = -np.mean(labels * np.log(mean) + (1 - labels) * np.log(1 - mean))
    best_loss = -np.mean(labels * np.log([0.6, 0.1, 0.4, 0.9]) + (1 - labels) * np.log([0.4, 0.9, 0.6, 0.1]))
    assert rows[0][1:3] == ["0.75000", "+0.00000"]  # top 1 is the best point itself: AUC 3 of 4 pairs
    assert float(rows[1][1]) == 1.0 and float(rows[1][2]) == 0.25  # top 2 ranks all four pairs right
    assert float(rows[1][5]) == round(loss, 5) and float(rows[1][6]) == round(loss - best_loss, 5)
