"""The example run shipped in reports/example: whole, and readable on any machine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

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
