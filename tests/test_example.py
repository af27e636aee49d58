"""The example run shipped in reports/example: whole, and readable on any machine."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from reporting.model_card import render_model_card
from runs import RunResult

EXAMPLE = Path(__file__).resolve().parents[1] / "reports" / "example"
# A folder of the machine that wrote the run: meaningless in a user's clone.
ABSOLUTE_FOLDER = re.compile(r"(?<![\w:/.])/(work|home|tmp|root|Users|mnt|check)/")
TEXT_SUFFIXES = {".md", ".json", ".yaml", ".csv"}


def example_text_files() -> list[Path]:
    return sorted(path for path in EXAMPLE.iterdir() if path.suffix in TEXT_SUFFIXES)


def test_the_example_has_a_finished_report_and_model_card():
    metrics = json.loads((EXAMPLE / "metrics.json").read_text())
    assert {"accuracy", "roc_auc", "sensitivity", "specificity", "ci95"} <= set(metrics["test"])
    assert (EXAMPLE / "report.md").read_text().startswith("# Chest X-ray pneumonia classifier")
    assert (EXAMPLE / "model_card.md").read_text().startswith("---\n")


@pytest.mark.parametrize("document", ["report.md", "model_card.md"])
def test_every_file_the_example_links_to_is_there(document):
    links = re.findall(r"\]\(([^)#\s]+)\)", (EXAMPLE / document).read_text())
    local = [link for link in links if "://" not in link]
    missing = [link for link in local if not (EXAMPLE / link).exists()]
    assert not missing, f"{document} links to files reports/example lacks: {missing}"


def test_the_example_names_no_folder_of_the_machine_that_ran_it():
    found = {
        path.name: match.group(0)
        for path in example_text_files()
        for match in [ABSOLUTE_FOLDER.search(path.read_text())]
        if match
    }
    assert not found, f"reports/example names absolute folders: {found}"


def test_the_absolute_folder_pattern_tells_a_path_from_a_url_or_a_fraction():
    assert ABSOLUTE_FOLDER.search("--reports-dir /work/main/reports")
    assert ABSOLUTE_FOLDER.search("config: /home/ana/tuned.yaml")
    assert not ABSOLUTE_FOLDER.search("https://example.org/work/x and ../shared/data and 3/tmp/")


@pytest.mark.parametrize("folder", [Path("reports/example"), EXAMPLE])
def test_the_example_card_runs_predict_on_the_example_folder(folder, monkeypatch):
    # Rendered from the example's own files, as `report.render` writes the card: its commands must name a folder
    # a clone has, not the name of the run the example was copied from.
    monkeypatch.chdir(EXAMPLE.parents[1])
    card = render_model_card(RunResult.load(folder))
    folders = re.findall(r"^python predict\.py .* --run (\S+)", card, re.MULTILINE)
    assert folders and set(folders) == {"reports/example"}
    assert (EXAMPLE.parents[1] / folders[0] / "report.md").exists()
    if not (EXAMPLE / "model.keras").exists():
        assert "`python search.py --smoke`" in card  # the commands need a model first, and the card says how


def test_a_card_names_the_folder_it_is_written_to_not_its_run_name(tmp_path, monkeypatch):
    # How reports/example came to name a folder no clone has: a card written in one folder, read in another.
    copy = shutil.copytree(EXAMPLE, tmp_path / "shared_runs" / "copied", ignore=shutil.ignore_patterns("*.png", "*.db"))
    monkeypatch.chdir(tmp_path)
    for folder in (Path("shared_runs/copied"), copy):
        card = render_model_card(RunResult.load(folder))
        assert set(re.findall(r"--run (\S+)", card)) == {"shared_runs/copied"}
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # a folder outside the working one is another machine's: no absolute path
    card = render_model_card(RunResult.load(tmp_path / "shared_runs" / "copied"))
    assert set(re.findall(r"--run (\S+)", card)) == {"reports/copied"} and not ABSOLUTE_FOLDER.search(card)


def test_the_example_names_its_own_folder_and_says_how_to_get_a_model(tmp_path, monkeypatch, capsys):
    """No model file is committed: the example's card names reports/example, and predict.py on it says in one
    sentence how to train a model in about a minute."""
    from conftest import write_image

    import predict

    assert not list(EXAMPLE.glob("*.keras"))
    commands = re.findall(r"--run (\S+)", (EXAMPLE / "model_card.md").read_text())
    assert commands and set(commands) == {"reports/example"}
    assert "python search.py --smoke" in (EXAMPLE / "model_card.md").read_text()
    image = write_image(tmp_path / "xray.jpeg", size=120)
    monkeypatch.chdir(EXAMPLE.parents[1])
    assert predict.main([str(image), "--run", "reports/example"]) == 2
    error = capsys.readouterr().err
    assert "holds a run's report but not its model" in error and "python search.py --smoke" in error
