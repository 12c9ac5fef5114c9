"""The prepared GPU check (tools/gpu_check.py) in its dry run: CPU only, toy sizes.

The full dry run (``make gpu-check DRY_RUN=1``, a few minutes) is too slow for the suite;
these tests run one benchmark through it and check the budget rule: a part that runs over
its limit is stopped and reported, and the report is written all the same.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "gpu_check.py"


def dry_run(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_dry_run_benchmark_writes_the_report(tmp_path):
    done = dry_run(tmp_path, "--parts", "benchmarks", "--bench", "closed-form dynamics")
    assert done.returncode == 0, done.stdout + done.stderr
    report = (tmp_path / "GPU.md").read_text()
    assert "DRY RUN" in report and "torch" in report
    assert "| benchmark: closed-form dynamics | cpu: ok |" in report
    assert "mse_flow" in report  # the benchmark's own output is in the report


def test_a_part_over_its_limit_is_stopped_and_reported(tmp_path):
    done = dry_run(tmp_path, "--parts", "lessons", "--lesson-limit", "3")
    assert done.returncode == 1  # not every part is ok
    report = (tmp_path / "GPU.md").read_text()
    for lesson in ("08", "10"):
        assert f"| lesson {lesson} at CPU (default) scale | over time (stopped at 3 s) |" in report
