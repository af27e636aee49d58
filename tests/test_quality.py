"""bench/quality.py: baseline and tuned runs per seed through search.py, then one table of test figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

QUALITY = Path(__file__).parents[1] / "bench" / "quality.py"
SMOKE = ["--", "--synthetic", "--image-size", "48", "--epochs", "1", "--final-epochs", "1", "--max-trials", "2"]


def quality(cwd: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(QUALITY), *flags], cwd=cwd, capture_output=True, text=True, timeout=600)


def fake_run(reports: Path, name: str, accuracy: float, auc: float, hours: float = 1.0) -> None:
    run_dir = reports / name
    run_dir.mkdir(parents=True)
    test = {"accuracy": accuracy, "roc_auc": auc, "sensitivity": 0.96, "specificity": 0.9, "threshold": 0.5}
    metrics = {"test": test, "run": {"wall_seconds": {"total": hours * 3600}}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "report.md").write_text("finished")


def test_table_gives_mean_and_spread_over_seeds_and_checks_the_targets(tmp_path):
    reports = tmp_path / "reports"
    for seed, accuracy in ((1, 0.90), (2, 0.92), (3, 0.94)):
        fake_run(reports, f"baseline-80px-seed{seed}", accuracy - 0.05, 0.97, hours=0.5)
        fake_run(reports, f"cpu-search-seed{seed}", accuracy, 0.985)
    (reports / "cpu-search-seed4").mkdir()  # unfinished: left out
    fake_run(reports, "baseline-80px-seed4", 0.99, 0.99)  # no tuned run of seed 4 to pair it with

    result = quality(tmp_path, "--table-only", "--seeds", "1", "2", "3", "4")
    assert result.returncode == 0, result.stderr
    assert "| baseline | 4 | 0.900 ± 0.062 | 0.975 ± 0.010 |" in result.stdout
    assert "| tuned | 3 | 0.920 ± 0.020 | 0.985 ± 0.000 | 0.960 ± 0.000 | 0.900 ± 0.000 | 1.00 h |" in result.stdout
    assert "tuned mean accuracy 0.9200 vs target 0.93: not met" in result.stdout
    assert "tuned mean roc_auc 0.9850 vs target 0.98: met" in result.stdout
    assert "tuned mean accuracy 0.9200 vs baseline 0.8700 on seeds 1, 2, 3: beats the baseline" in result.stdout
    assert "cpu-search-seed4" not in result.stdout
    assert "| baseline | 4 |" in result.stdout


def test_table_only_without_runs_says_so(tmp_path):
    result = quality(tmp_path, "--table-only")
    assert result.returncode == 1
    assert "No finished runs in reports" in result.stdout


def test_runs_baseline_and_search_per_seed_then_reuses_them(tmp_path):
    result = quality(tmp_path, "--seeds", "3", *SMOKE)
    assert result.returncode == 0, result.stderr[-2000:]
    reports = tmp_path / "reports"
    for name in ("baseline-80px-seed3", "cpu-search-seed3"):
        metrics = json.loads((reports / name / "metrics.json").read_text())
        assert f"| {metrics['test']['accuracy']:.3f} | {metrics['test']['roc_auc']:.3f} |" in result.stdout
    tuned_config = (reports / "cpu-search-seed3" / "config.yaml").read_text()
    assert "color_mode: grayscale" in tuned_config and "final_schedule: cosine" in tuned_config

    again = quality(tmp_path, "--seeds", "3", *SMOKE)
    assert again.returncode == 0
    assert "baseline-80px-seed3: finished, reused" in again.stdout
    assert "cpu-search-seed3: finished, reused" in again.stdout
