"""report.md's "What the search learned" and study.db, rendered from a kept 25-trial search, an older Hyperband
run and the tiny search of conftest.py (3 trials: too few for importances)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import made_once

import runs
from config import load_recorded
from reporting import figures, report

pytestmark = pytest.mark.e2e  # every test here trains, or runs a command that does

ROOT = Path(__file__).resolve().parents[1]
QUALITY = ROOT / "bench" / "results" / "quality"
SEARCH_FIGURES = [name for name, _ in figures.SEARCH_FIGURES]
# A folder of the machine the test ran on: what a report must never name.
ABSOLUTE_FOLDER = re.compile(r"(?<![\w:/.])/(work|home|tmp|root|Users|mnt|check)/")


def learned_section(report_text: str) -> str:
    """The section "What the search learned" of a report.md, up to the next section."""
    assert "## What the search learned" in report_text
    return report_text.split("## What the search learned", 1)[1].split("\n## ", 1)[0]


def study_trials(run_dir: Path) -> tuple[str, list]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    loaded = optuna.load_study(study_name=None, storage=f"sqlite:///{run_dir / 'study.db'}")
    return loaded.study_name, loaded.get_trials()


def render_kept(source: Path, reports: Path, *beside: Path) -> Path:
    """A kept run copied into `reports` (with the runs beside it), rendered as bench/intervals.py re-renders it."""
    for folder in (source, *beside):
        shutil.copytree(folder, reports / folder.name)
    run_dir = reports / source.name
    settings = load_recorded(run_dir / "config.yaml").replace(reports_dir=str(reports))
    report.render(run_dir, runs.find_counterpart(settings, "search"))
    return run_dir


@pytest.fixture(scope="session")
def kept_search(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tuned-search-seed45 (random search, 25 trials) re-rendered beside its seed's baseline, once per session
    (whichever xdist worker asks first). Read only."""

    def make(reports: Path) -> None:
        render_kept(QUALITY / "tuned-search-seed45", reports, QUALITY / "baseline-80px-seed45")

    return made_once(tmp_path_factory, "kept_search_reports", make) / "tuned-search-seed45"


def test_a_kept_search_renders_what_it_learned(kept_search: Path) -> None:
    section = learned_section((kept_search / "report.md").read_text())
    assert "Over 25 completed trials, fANOVA finds learning_rate" in section
    assert "| 1 | learning_rate |" in section and "fANOVA 5–95% (resampled)" in section
    assert "the 25 completed of 25 trials" in section and "PED-ANOVA" in section
    assert "conditional: unused by some trials" in section  # filters_3 and the like, not ranked
    assert "optuna-dashboard sqlite:///study.db" in section
    for name in SEARCH_FIGURES:
        assert f"]({name})" in section and (kept_search / name).stat().st_size > 10_000
    # The search's figures now sit in this section alone, not again under Plots.
    assert (kept_search / "report.md").read_text().count("](search_progress.png)") == 1


def test_a_kept_search_writes_its_study(kept_search: Path) -> None:
    name, trials = study_trials(kept_search)
    assert name == "tuned-search-seed45" and len(trials) == 25
    assert trials[0].user_attrs["baseline"] and trials[0].params["learning_rate"] == pytest.approx(0.001)
    assert not list(kept_search.glob(".study*"))  # written whole: no temporary left


def test_a_re_render_changes_no_kept_figure(kept_search: Path) -> None:
    for name in ("metrics.json", "trials.csv", "predictions.csv", "history.csv", "config.yaml"):
        assert (kept_search / name).read_bytes() == (QUALITY / kept_search.name / name).read_bytes(), name
    kept = (QUALITY / kept_search.name / "report.md").read_text()
    again = (kept_search / "report.md").read_text()
    # Rendered when a search and a baseline had to share every retrain setting, the kept report found no baseline to
    # compare with; the notebook baseline of the same split is its comparison now. The rest reads as it did.
    assert "baseline (no matching run yet)" in kept and "baseline (`baseline-80px-seed45`)" in again
    assert without_comparison(again).split("## Search", 1)[0] == without_comparison(kept).split("## Search", 1)[0]


def without_comparison(report_text: str) -> str:
    """A report without its sections comparing the run with the other kind (the table and the paired differences)."""
    sections = report_text.split("\n## ")
    comparing = ("Test: this run against the other kind", "Tuned minus baseline")
    return "\n## ".join(section for section in sections if not section.startswith(comparing))


def test_rendered_files_name_no_folder_of_this_machine(kept_search: Path) -> None:
    # (Seed 45's recorded command, in its metrics.json, names the folder it ran from: kept as recorded.)
    assert not ABSOLUTE_FOLDER.search(learned_section((kept_search / "report.md").read_text()))
    for path in [*kept_search.glob("*.md"), kept_search.parent / "index.md"]:
        assert str(kept_search.parent) not in path.read_text(), path.name
    assert str(kept_search.parent).encode() not in (kept_search / "study.db").read_bytes()


def test_an_older_hyperband_run_renders_its_budget_note(tmp_path: Path) -> None:
    run_dir = render_kept(ROOT / "bench" / "results" / "search-hyperband-seed42", tmp_path)
    section = learned_section((run_dir / "report.md").read_text())
    assert "Over 10 completed trials" in section
    assert "Note: Hyperband trials ran 2 to 6 epochs" in section
    assert len(study_trials(run_dir)[1]) == 10


def test_the_tiny_search_says_why_no_importance_is_shown(tiny_runs) -> None:
    run_dir = tiny_runs.search
    section = learned_section((run_dir / "report.md").read_text())
    assert "cannot be said yet: 3 completed trials; importances need at least 8" in section
    assert "| rank |" not in section  # no table to show
    assert len(study_trials(run_dir)[1]) == 3
    for name in SEARCH_FIGURES:
        assert f"]({name})" in section and (run_dir / name).exists()


def test_the_tiny_search_plots_say_they_rest_on_few_trials(tiny_runs) -> None:
    result = runs.RunResult.load(tiny_runs.search)
    for name in ("search_hyperparameters.png", "search_parallel_coordinates.png"):
        title = figures.search_figure(result, name).get_suptitle()
        assert "3 completed trials" in title or "of 3 completed" in title
        assert "too few to read a trend" in title


def test_a_baseline_run_has_no_such_section(tiny_runs) -> None:
    assert "What the search learned" not in (tiny_runs.baseline / "report.md").read_text()
    assert not (tiny_runs.baseline / "study.db").exists()


def test_search_and_report_do_not_import_optuna_at_start() -> None:
    code = "import sys, search; import reporting.report; print('optuna' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
