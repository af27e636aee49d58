"""bench/: every script answers --help without loading Keras, and each living benchmark's --smoke runs its own
code on the tiniest input (generated images, or a committed run) and prints figures that make sense.

bench/quality.py's --smoke (whole tiny searches) runs in tests/test_quality.py; here it prints the committed
table that README quotes. bench/compile.py (its --smoke is a JAX search, about a minute here), bench/gpu.sh and
bench/gpu_summary.py (a GPU machine's runs), and bench/experiments/ are checked with --help only.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # every test here runs a bench script, most of them training

BENCH = Path(__file__).resolve().parents[1] / "bench"
NUMBER = r"[-+]?\d+(?:\.\d+)?"

# `python SCRIPT --help` for each script in turn, in one interpreter (so the suite pays for pandas once): the exit
# code, what it printed, and which heavy modules were loaded by then (a script that loads one is the first named).
HELP = """
import contextlib, io, json, os, runpy, sys
results = {}
for script in sys.argv[1:]:
    sys.argv, printed = [script, "--help"], io.StringIO()
    sys.path.insert(0, os.path.dirname(script))
    try:
        with contextlib.redirect_stdout(printed):
            runpy.run_path(script, run_name="__main__")
        code = "returned without exiting"
    except SystemExit as exit:
        code = exit.code or 0
    except Exception as error:
        code = repr(error)
    sys.path.pop(0)
    heavy = sorted({"keras", "tensorflow", "jax"} & set(sys.modules))
    results[script] = {"code": code, "printed": printed.getvalue(), "heavy": heavy}
print(json.dumps(results))
"""


def test_every_bench_script_answers_help_before_loading_keras():
    scripts = sorted([*BENCH.glob("*.py"), *BENCH.glob("experiments/*.py")])
    assert len(scripts) >= 22  # the living benchmarks and bench/experiments/
    done = subprocess.run([sys.executable, "-c", HELP, *map(str, scripts)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    for script, result in json.loads(done.stdout).items():
        name = Path(script).relative_to(BENCH)
        assert result["code"] == 0, f"{name}: {result['code']}"
        assert result["printed"].startswith("usage: "), f"{name} printed no usage line"
        assert not result["heavy"], f"{name} loaded {result['heavy']} before reading its arguments"
    shell = subprocess.run(["bash", str(BENCH / "gpu.sh"), "--help"], capture_output=True, text=True, timeout=30)
    assert shell.returncode == 0 and shell.stdout.startswith("usage: bash bench/gpu.sh")


def run_script(name: str, argv: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> str:
    """bench/NAME's main(argv) in this process (the --help test covers the command line); what it printed."""
    script = BENCH / name
    monkeypatch.syspath_prepend(str(script.parent))  # a script's siblings import as they do when it runs
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(argv) in (None, 0)
    return capsys.readouterr().out


def numbers(line: str) -> list[float]:
    return [float(value) for value in re.findall(NUMBER, line.replace(",", ""))]


def check_input_pipeline(out: str) -> None:
    for label in ("(a) ImageDataGenerator", "(b) ours", "(c) in-memory batches"):
        row = next(line for line in out.splitlines() if line.strip().startswith(label))
        rates = [float(value) for value in row.split()[-4:]]  # epoch 1, all epochs, epochs 2+, fastest 2+
        assert all(rate > 0 for rate in rates), row
    assert re.search(rf"b/a, all epochs: {NUMBER}", out) and re.search(rf"b/c, from epoch 2: {NUMBER}", out)
    assert '"b": [{"images": ' in out  # the raw line --from-raw reads back


def check_precision(out: str) -> None:
    variants = ("today (float32, three layers)", "fused float32", "fused + auto", "float32, no augmentation")
    for variant in variants:
        row = next(line for line in out.splitlines() if line.strip().startswith(variant))
        figures = numbers(row.removeprefix("  " + variant))
        assert len(figures) >= 5 and figures[0] > 0, row  # images/s, x today, fastest, x today, epoch seconds
    costs = re.search(rf"ms per batch of 64: three layers ({NUMBER}), fused ({NUMBER})", out)
    assert costs and float(costs[1]) > 0 and float(costs[2]) > 0
    assert re.search(r"fused \+ auto \d+\.\d\dx today's vs target 2\.0x: (met|not met)", out)


def check_decode(out: str) -> None:
    assert re.search(r"^132 files from .*, decoded to 48 px, 3 channel\(s\)$", out, re.MULTILINE)
    rates = re.findall(rf"^  (.+?)\s+({NUMBER}) images/s$", out, re.MULTILINE)
    assert [name for name, _ in rates][:2] == ["data.decode_images (Pillow)", "Pillow, full decode"]
    assert all(float(rate) > 0 for _, rate in rates)
    for mean, top in re.findall(rf"mean ({NUMBER}), 99th percentile {NUMBER}, max ({NUMBER})", out):
        assert float(mean) < 2 and float(top) <= 16  # Pillow's pixels stay within a JPEG decode's rounding


def check_memory(out: str) -> None:
    readings = [float(value) for value in re.findall(r"^RSS after trial \d+: (\d+) MB", out, re.MULTILINE)]
    assert len(readings) == 2 and all(reading > 100 for reading in readings)
    assert re.search(r"^RSS growth from trial 1 to trial 2: [-+]\d+ MB$", out, re.MULTILINE)
    assert re.search(r"^RSS after building the retrain's datasets: \d+ MB", out, re.MULTILINE)


def check_noise_floor(out: str) -> None:
    counts = re.search(r": 2 repeats, (\d+) validation images, (\d+) patients$", out, re.MULTILINE)
    assert counts and int(counts[1]) == 2 * int(counts[2]) > 0  # two images of each generated patient
    rows = {int(line.split()[0]): numbers(line) for line in out.splitlines() if re.match(r"^\s+[12]\s+1\s", line)}
    assert sorted(rows) == [1, 2]  # training seeds 1 and 2, each keeping its one epoch
    for figures in rows.values():
        assert 0 < figures[3] < 1 and 0 <= figures[4] <= 1  # validation log loss, ROC AUC
    assert "k=2: log loss" in out and re.search(rf"^  1 - 2: {NUMBER} \[{NUMBER}, {NUMBER}\]$", out, re.MULTILINE)


def check_threshold(out: str) -> None:
    # The committed run's validation predictions: each rule's threshold does not depend on the resamples.
    assert re.search(r"^tuned-search-seed45\s+525\s+0\.48\s", out, re.MULTILINE)
    chosen = dict(re.findall(rf"^tuned-search-seed45\s+([a-z_]+)\s+({NUMBER})\s", out, re.MULTILINE))
    assert chosen == {"youden": "0.480", "youden_or_half": "0.500", "plateau": "0.417"}


def check_intervals(out: str) -> None:
    # Recomputed from the committed run's predictions.csv, checked there against its metrics.json first.
    for metric in ("accuracy", "roc_auc", "sensitivity", "specificity", "precision", "f1"):
        assert re.search(rf"^\| {metric} \| {NUMBER} \[{NUMBER}, {NUMBER}\] \|$", out, re.MULTILINE), metric
    assert "| accuracy | 0.880 [" in out and "| bacteria | 242 | 77 |" in out and "| virus | 148 | 126 |" in out


def check_importance(out: str) -> None:
    assert "| hyperparameter | tuned-search-seed45 | finalists-search-seed49 | mean |" in out
    first = next(line for line in out.splitlines() if line.startswith("| ") and "hyperparameter" not in line)
    assert first.startswith("| learning_rate |")  # the largest mean importance of the two searches
    assert "Across 2 searches of 25 to 25 trials" in out


def check_quality(out: str) -> None:
    # README's figures, printed again from the committed run files.
    for seed in (49, 50, 51):
        assert f"| tuned | {seed} | finalists-search-seed{seed} |" in out
    assert "beats the baseline (mean paired difference +0.0045 [+0.0012, +0.0084] on seeds 49, 50, 51)" in out
    assert "| mean over seeds | +0.005 [-0.003, +0.013] | +0.005 [+0.001, +0.008] |" in out
    assert "seed 51: baseline and tuned 1.27 h" in out
    # What each seed delivered and why, from its metrics.json; this protocol retrained each finalist once.
    assert (
        "- seed 50: delivered the baseline's point at weight 0.6 and trial 10 at weight 0.4; greedy choice minus the "
        "baseline's point -0.0060 [-0.0188, +0.0042]; trial 10 (10 values changed) retrained once, not raced: 0.0745 "
        "against 0.0706;" in out
    )


def check_search_evidence(out: str) -> None:
    # Two committed runs' challengers, each a gap with its paired interval, checked against the kept racing records.
    assert re.search(
        rf"^finalists-search-seed49 02\s+9\s+0\.1664\s+0\.1037\s+\+0\.0540 \[{NUMBER}, {NUMBER}\]", out, re.M
    )
    assert "4 of these gaps were checked against their run's round-1 racing record" in out
    assert "Gap against the number of changed values over 8 challengers" in out
    assert out.rstrip().endswith("Skipped or odd, per run:\n  nothing")  # every gap agrees with its racing record


QUALITY_TABLE = (
    "--table-only --config configs/archive/finalists.yaml --seeds 49 50 51 --reports-dir bench/results/quality"
)
SMOKES = {
    "input_pipeline.py": (["--smoke"], check_input_pipeline),
    "precision.py": (["--smoke"], check_precision),
    "decode.py": (["--smoke"], check_decode),
    "memory.py": (["--smoke"], check_memory),
    "noise_floor.py": (["--smoke"], check_noise_floor),
    "threshold.py": (["--smoke"], check_threshold),
    "intervals.py": (["--smoke"], check_intervals),
    "importance.py": (["--smoke"], check_importance),
    "search_evidence.py": (["--smoke"], check_search_evidence),
    "quality.py": (QUALITY_TABLE.split(), check_quality),
}


@pytest.mark.parametrize("name", SMOKES)
def test_living_benchmark_smoke(name, capsys, monkeypatch):
    argv, check = SMOKES[name]
    monkeypatch.chdir(BENCH.parent)  # where the documented commands run
    check(run_script(name, argv, capsys, monkeypatch))


def test_quality_says_which_point_each_raced_seed_delivered_and_each_challengers_standing(monkeypatch):
    # The repeats protocol's kept runs: the race put every challenger of seed 54 out after one retrain.
    monkeypatch.chdir(BENCH.parent)
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_quality", BENCH / "quality.py")
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    runs = quality.planned_runs(Path("configs/repeats.yaml"), [54])
    (line,) = quality.delivery_lines(runs, Path("bench/results/quality"))
    assert line.startswith("- seed 54: delivered the baseline's point alone; trial 15 (10 values changed) ")
    assert "trial 15 (10 values changed) +0.0197 [+0.0028, +0.0346] over 1 repeat, out;" in line
    assert line.count(", out") == 4 and "greedy choice" not in line  # the greedy choice was the baseline's point


def test_noise_floor_replays_the_first_round_of_racing_on_committed_finalist_runs(capsys, monkeypatch):
    # The evidence behind configs/repeats.yaml: after one retrain each, 3 of seed 49's 4 challengers are out.
    monkeypatch.chdir(BENCH.parent)
    out = run_script("noise_floor.py", ["--race", "bench/results/quality/finalists-search-seed49"], capsys, monkeypatch)
    lines = [line for line in out.splitlines() if line.startswith("finalists-search-seed49 trial ")]
    assert len(lines) == 4 and sum(line.endswith("clearly worse: out") for line in lines) == 3
    assert "trial 04 (weight 0.00): +0.0111 [-0.0013, +0.0227] races on" in out


def test_noise_floor_compares_kept_repeats_paired_by_training_seed(capsys, monkeypatch):
    # results.md's table of single changes: batch normalisation's gap over the two training seeds both ran, and the
    # baseline's point retrained twice at one commit, which gave the same probabilities.
    monkeypatch.chdir(BENCH.parent)
    kept = "bench/results/noise_floor/seed42-80px"
    argv = ["--compare", kept, f"{kept}-again", f"{kept}-batchnorm"]
    out = run_script("noise_floor.py", argv, capsys, monkeypatch)
    assert "seed42-80px-again: seeds 42: log loss +0.0000 [+0.0000, +0.0000] per repeat" in out
    assert "seed42-80px-batchnorm: seeds 42, 43: log loss -0.0256 [-0.0418, -0.0114] per repeat" in out
