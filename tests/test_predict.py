"""predict.py, Grad-CAM, calibration and the runs index, on a tiny baseline run of synthetic data."""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import write_image

import data
import explain
import predict
import runs


@pytest.fixture
def run_dir(tiny_runs) -> Path:
    return tiny_runs.baseline  # a tiny baseline run trained in mixed bfloat16


@pytest.fixture
def in_workdir(run_dir, monkeypatch) -> Path:
    monkeypatch.chdir(run_dir.parents[1])
    return run_dir


def test_predict_matches_the_runs_own_test_predictions(in_workdir, capsys, tmp_path):
    config = yaml.safe_load((in_workdir / "config.yaml").read_text())
    csv = tmp_path / "out.csv"
    assert predict.main([str(Path(config["data_dir"]) / "test"), "--run", str(in_workdir), "--csv", str(csv)]) == 0

    ours = pd.read_csv(csv)
    expected = pd.read_csv(in_workdir / "predictions.csv").query("split == 'test'")
    merged = ours.merge(expected, on="file")
    assert len(merged) == len(expected) == len(ours)
    assert merged["p_pneumonia_x"].to_numpy() == pytest.approx(merged["p_pneumonia_y"].to_numpy(), abs=1e-5)
    threshold = yaml.safe_load((in_workdir / "metrics.json").read_text())["validation"]["threshold"]
    assert (merged["label_x"] == np.where(merged["p_pneumonia_y"] >= threshold, "PNEUMONIA", "NORMAL")).all()
    assert ours["file"].iloc[0] in capsys.readouterr().out


def test_a_mixed_precision_run_records_it_and_its_model_predicts_in_float32(in_workdir):
    run = yaml.safe_load((in_workdir / "metrics.json").read_text())["run"]
    assert run["precision"] == {"policy": "mixed_bfloat16", "reason": "as configured"}
    assert "| precision | mixed_bfloat16 (as configured) |" in (in_workdir / "report.md").read_text()
    model = keras.saving.load_model(in_workdir / "model.keras", safe_mode=True)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.compute_dtype == "bfloat16" for layer in convs)
    assert model.get_layer("probabilities").compute_dtype == "float32"
    images = np.random.default_rng(0).integers(0, 255, (3, 48, 48, 3), dtype=np.uint8)
    assert model.predict(images, verbose=0).dtype == np.float32


def test_bad_files_are_listed_and_the_rest_predicted(in_workdir, tmp_path, capsys):
    folder = tmp_path / "mixed"
    write_image(folder / "good.png", size=300, mode="RGB")
    write_image(folder / "gray.jpeg", size=64)
    (folder / "empty.jpeg").write_bytes(b"")
    (folder / "notes.jpeg").write_text("not an image")
    assert predict.main([str(folder), str(tmp_path / "missing.png"), "--run", str(in_workdir)]) == 1
    captured = capsys.readouterr()
    assert "good.png" in captured.out and "gray.jpeg" in captured.out
    for name in ("empty.jpeg", "notes.jpeg", "missing.png"):
        assert name in captured.err
    assert "3 file(s) could not be read" in captured.err and "no such file" in captured.err


def test_explain_writes_one_overlay_per_image(in_workdir, tmp_path):
    config = yaml.safe_load((in_workdir / "config.yaml").read_text())
    test_dir = Path(config["data_dir"]) / "test" / "PNEUMONIA"
    out = tmp_path / "cams"
    assert predict.main([str(test_dir), "--run", str(in_workdir), "--explain", str(out)]) == 0
    overlays = sorted(out.glob("*_gradcam.png"))
    assert len(overlays) == len(list(test_dir.iterdir()))
    assert keras.utils.load_img(overlays[0]).size == (config["image_size"], config["image_size"])


def test_grad_cam_has_the_image_size_and_is_not_constant(in_workdir):
    model = keras.saving.load_model(in_workdir / "model.keras", safe_mode=True)
    predictions = pd.read_csv(in_workdir / "predictions.csv").query("split == 'test' and label == 1")
    images = data.decode_images([Path(file) for file in predictions["file"]], 48, 3)
    heatmaps = explain.grad_cam(model, images, np.ones(len(images), int))
    assert heatmaps.shape == images.shape[:3]
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    assert (heatmaps.std(axis=(1, 2)) > 0.01).mean() > 0.5  # most maps point somewhere


def test_missing_run_is_one_sentence(tmp_path, capsys):
    assert predict.main([str(tmp_path), "--run", str(tmp_path / "nothing")]) == 2
    assert "is not a finished run (missing config.yaml, metrics.json, model.keras)" in capsys.readouterr().err


def test_ensemble_of_a_run_without_one_is_one_sentence(in_workdir, capsys):
    assert predict.main([str(in_workdir), "--run", str(in_workdir), "--ensemble"]) == 2
    assert "holds no saved ensemble" in capsys.readouterr().err


def test_report_shows_calibration_and_grad_cam(in_workdir):
    text = (in_workdir / "report.md").read_text()
    predictions = pd.read_csv(in_workdir / "predictions.csv").query("split == 'test'")
    brier = np.mean((predictions["p_pneumonia"] - predictions["label"]) ** 2)
    assert f"test {brier:.3f}" in text
    for figure in ("calibration.png", "gradcam.png"):
        assert f"]({figure})" in text and (in_workdir / figure).stat().st_size > 5_000


def test_index_lists_every_run_folder(in_workdir):
    reports = in_workdir.parent
    (reports / "half-done").mkdir()
    (reports / "half-done" / "config.yaml").write_text("seed: 1\n")
    runs.write_index(reports)
    index = (reports / "index.md").read_text()
    assert f"[report]({in_workdir.name}/report.md)" in index
    assert "| half-done | unfinished |" in index
    row = next(line for line in index.splitlines() if line.startswith(f"| {in_workdir.name} "))
    test = yaml.safe_load((in_workdir / "metrics.json").read_text())["test"]
    assert "| baseline | 48 |" in row and f"| {test['accuracy']:.3f} |" in row


def test_a_folder_copied_in_part_does_not_stop_the_index(run_dir, tmp_path):
    # A run's report must not fail because another folder beside it lacks files (a run copied by hand, say).
    reports = tmp_path / "reports"
    shutil.copytree(run_dir, reports / "whole", ignore=shutil.ignore_patterns("model.keras", "tensorboard"))
    (reports / "part").mkdir()
    for name in ("config.yaml", "metrics.json", "report.md"):  # a baseline without its history.csv
        shutil.copy2(run_dir / name, reports / "part" / name)
    (reports / "garbled").mkdir()
    (reports / "garbled" / "config.yaml").write_text("objective: val_auc\n")
    (reports / "garbled" / "metrics.json").write_text("{}")
    runs.write_index(reports)
    index = (reports / "index.md").read_text()
    assert "[report](whole/report.md)" in index
    assert "| part | unreadable (history.csv: No such file or directory) |" in index
    assert "| garbled | unreadable (KeyError('run')) |" in index
