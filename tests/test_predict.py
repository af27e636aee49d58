"""predict.py, Grad-CAM, calibration and the runs index, on a tiny baseline run of synthetic data."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import write_image

import data
import predict
from config import ConfigError
from hypermodel import weighted_ensemble
from reporting import explain, report
from reporting import index as reports_index


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
    assert (ours["threshold"] == threshold).all()  # the CSV says which threshold its labels used
    out = capsys.readouterr().out
    assert ours["file"].iloc[0] in out
    # The threshold is printed once, above the rows.
    header = f"Threshold {threshold:.4f} (chosen on validation by the run's `{config['threshold']}` rule)"
    assert out.count("Threshold ") == 1 and out.index(header) < out.index(ours["file"].iloc[0])


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
    for overlay in overlays:  # each at its own file's size (the synthetic images vary), not the model's 48 px
        (source,) = test_dir.glob(overlay.name.removesuffix("_gradcam.png") + ".*")
        assert keras.utils.load_img(overlay).size == keras.utils.load_img(source).size


def test_an_overlay_has_the_original_size_and_a_caption(in_workdir, tmp_path):
    from PIL import Image

    wide = tmp_path / "xrays" / "wide.png"  # neither the model's 48 px nor square
    wide.parent.mkdir()
    Image.fromarray(np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))).save(wide)
    out = tmp_path / "cams"
    assert predict.main([str(wide), "--run", str(in_workdir), "--explain", str(out)]) == 0
    overlay = np.asarray(Image.open(out / "wide_gradcam.png").convert("RGB"))
    assert overlay.shape == (240, 320, 3)
    # The caption: white text on a black box in the top-left corner, where the image under the heatmap is dark.
    corner = overlay[:20, :100]
    assert (corner == 0).all(axis=-1).any() and (corner.min(axis=-1) > 150).any()
    assert not (overlay[-20:, :100] == 0).all(axis=-1).any()  # jet's darkest blue over the image is not black


def test_the_caption_names_the_label_probability_and_threshold():
    assert predict.caption("PNEUMONIA", 0.3142, 0.181) == [
        "PNEUMONIA: P(pneumonia) 0.314",
        "at or above the threshold 0.181",
    ]
    assert predict.caption("NORMAL", 0.1, 0.181)[1] == "below the threshold 0.181"


def test_the_threshold_line_says_where_the_threshold_came_from():
    fixed = {"config": SimpleNamespace(threshold=0.5), "threshold": 0.5}
    assert predict.threshold_line(fixed) == (
        "Threshold 0.5000 (fixed at 0.5 by the run's config): P(pneumonia) at or above it reads PNEUMONIA"
    )


def test_an_ensemble_model_predicts_and_grad_cam_explains_its_heaviest_member(in_workdir, tmp_path):
    """A finalist run's model.keras is a weighted ensemble (hypermodel.weighted_ensemble): served as it is."""
    copy = shutil.copytree(in_workdir, tmp_path / in_workdir.name, ignore=shutil.ignore_patterns("tensorboard"))
    heaviest = keras.saving.load_model(in_workdir / "model.keras", safe_mode=True)
    other = keras.saving.load_model(in_workdir / "model.keras", safe_mode=True)
    other.set_weights([weight * 0.5 for weight in other.get_weights()])  # a different member
    weighted_ensemble([other, heaviest], [0.3, 0.7], ["a", "b"]).save(copy / "model.keras")

    files = pd.read_csv(in_workdir / "predictions.csv").query("split == 'test'")["file"].tolist()[:4]
    out, csv = tmp_path / "cams", tmp_path / "out.csv"
    assert predict.main([*files, "--run", str(copy), "--csv", str(csv), "--explain", str(out)]) == 0
    assert len(pd.read_csv(csv)) == len(list(out.glob("*_gradcam.png"))) == 4

    ensemble = keras.saving.load_model(copy / "model.keras", safe_mode=True)
    images = data.decode_images([Path(file) for file in files], 48, 3)
    classes = np.ones(len(images), int)
    assert explain.grad_cam(ensemble, images, classes) == pytest.approx(
        explain.grad_cam(heaviest, images, classes), abs=1e-5
    )


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
    assert f"--run {tmp_path / 'nothing'} is not a folder" in capsys.readouterr().err
    (tmp_path / "half").mkdir()
    assert predict.main([str(tmp_path), "--run", str(tmp_path / "half")]) == 2
    assert "is not a finished run (missing config.yaml, metrics.json, model.keras)" in capsys.readouterr().err


def test_a_run_without_its_model_says_so_and_how_to_train_one(run_dir, tmp_path, capsys):
    # The committed reports/example: a finished run's report and files, without model.keras.
    copy = shutil.copytree(run_dir, tmp_path / "example", ignore=shutil.ignore_patterns("model.keras", "tensorboard"))
    assert predict.main([str(tmp_path), "--run", str(copy)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert f"--run {copy} holds a run's report but not its model" in captured.err
    assert "`python search.py --smoke`" in captured.err and "pass the folder it prints" in captured.err
    assert "that holds a report.md" not in captured.err  # it does hold one


def test_report_shows_calibration_and_grad_cam(in_workdir):
    text = (in_workdir / "report.md").read_text()
    predictions = pd.read_csv(in_workdir / "predictions.csv").query("split == 'test'")
    brier = np.mean((predictions["p_pneumonia"] - predictions["label"]) ** 2)
    assert f"test {brier:.3f}" in text
    for figure in ("calibration.png", "gradcam.png"):
        assert f"]({figure})" in text and (in_workdir / figure).stat().st_size > 5_000


def test_index_lists_every_run_folder(run_dir, tmp_path):
    reports = tmp_path / "reports"  # a copy: the tiny runs are read only
    shutil.copytree(run_dir, reports / run_dir.name, ignore=shutil.ignore_patterns("model.keras", "tensorboard"))
    (reports / "half-done").mkdir()
    (reports / "half-done" / "config.yaml").write_text("seed: 1\n")
    reports_index.write_index(reports)
    index = (reports / "index.md").read_text()
    assert f"[report]({run_dir.name}/report.md)" in index
    assert "| half-done | unfinished |" in index
    row = next(line for line in index.splitlines() if line.startswith(f"| {run_dir.name} "))
    test = yaml.safe_load((run_dir / "metrics.json").read_text())["test"]
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
    reports_index.write_index(reports)
    index = (reports / "index.md").read_text()
    assert "[report](whole/report.md)" in index
    assert "| part | unreadable (history.csv: No such file or directory) |" in index
    assert "| garbled | unreadable (KeyError('run')) |" in index


def test_a_run_made_with_ensemble_size_is_served_at_1_and_refused_in_one_sentence_above(in_workdir, tmp_path, capsys):
    # Older runs recorded ensemble_size (removed): at 1, every committed run's value, they render and serve as
    # before; above 1 (a runners-up ensemble in ensemble/) predict.py and the report refuse them in one sentence
    # naming the run's config.yaml and the commit that still reads them (config.upgrade).
    old = tmp_path / "reports" / "made-with-ensemble-size"
    shutil.copytree(in_workdir, old, ignore=shutil.ignore_patterns("tensorboard"))
    report.render(old)
    as_written = (old / "report.md").read_text()
    config = yaml.safe_load((old / "config.yaml").read_text())
    (old / "config.yaml").write_text(yaml.safe_dump({**config, "ensemble_size": 1}, sort_keys=False))
    report.render(old)
    assert (old / "report.md").read_text() == as_written
    test_files = pd.read_csv(old / "predictions.csv").query("split == 'test'")
    csv = tmp_path / "served.csv"
    assert predict.main([*test_files["file"], "--run", str(old), "--csv", str(csv)]) == 0
    ours = pd.read_csv(csv)
    assert ours["p_pneumonia"].to_numpy() == pytest.approx(test_files["p_pneumonia"].to_numpy(), abs=1e-5)
    capsys.readouterr()

    (old / "config.yaml").write_text(yaml.safe_dump({**config, "ensemble_size": 2}, sort_keys=False))
    assert predict.main([*test_files["file"], "--run", str(old)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith(f"error: {old / 'config.yaml'}: this run was made with ensemble_size 2, ")
    assert "check out 7f6c4e1 (git checkout 7f6c4e1) to render or serve it" in captured.err
    with pytest.raises(ConfigError, match="ensemble_size 2, removed after commit 7f6c4e1"):
        report.render(old)
