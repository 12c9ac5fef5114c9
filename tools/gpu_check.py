"""The whole GPU check as one prepared command: python tools/gpu_check.py [--dry-run]

Runs, in order, each part under its own time limit (a part that runs over is stopped and
reported, not waited for; the report is written even when a part fails):

1. the ``gpu``-marked tests (CPU/GPU parity of every module that takes ``device=``);
2. the benchmarks with ``--device cuda`` and, from the same script, their CPU counterpart:
   the empirical NTK, the closed-form dynamics (``linear_models``), iterative linearisation
   (the linearised step against a GD step at a size where a GPU matters), and the
   coordinate check to width 16384;
3. lessons 08 and 10 executed at their ``FULL`` scale (chosen by the lessons themselves
   when PyTorch sees a CUDA device), saved beside the report so they can be committed.

It writes ``benchmarks/GPU.md``: the device, torch and CUDA versions, every benchmark's
output on the GPU next to its CPU counterpart, the numbers the ``FULL`` lessons printed, and
the status and time of every part. The whole check is budgeted to 8 minutes on one modern
data-centre GPU.

``--dry-run`` runs the same parts on the CPU at toy sizes (a few minutes on 2 cores), so that
a machine without a GPU proves the script works; its report says it is a dry run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 480  # the whole check, on one modern data-centre GPU


@dataclass(frozen=True)
class Bench:
    """One benchmark script, its arguments on the GPU, on the CPU and in a dry run."""

    name: str
    script: str
    gpu_args: tuple[str, ...]
    cpu_args: tuple[str, ...]
    dry_args: tuple[str, ...]
    limit_s: int


BENCHES = (
    # The CPU counterpart at 64 points: torch.func's Jacobian contraction of a 10-output
    # width-1024 network takes minutes per call on a CPU at 256.
    Bench("empirical NTK", "empirical_ntk.py", ("--points", "256", "--width", "1024"),
          ("--points", "64", "--width", "1024", "--repeats", "1"),
          ("--points", "16", "--width", "32", "--outputs", "3", "--repeats", "1"), 90),
    Bench("closed-form dynamics", "linear_models.py", ("--repeats", "5"), ("--repeats", "3"),
          ("--repeats", "1"), 40),
    Bench("iterative linearisation", "iterative.py", ("--points", "4096", "--steps", "30"),
          ("--points", "4096", "--steps", "10"), ("--points", "128", "--steps", "3",
                                                  "--rounds", "1"), 80),
    Bench("coordinate check", "coordcheck.py", ("--max-width", "16384"),
          ("--max-width", "4096"), ("--max-width", "128"), 90),
)
LESSONS = (("08", "lessons/08_mup_in_practice.ipynb", 110),
           ("10", "lessons/10_iterative_linearisation.ipynb", 110))
TESTS_LIMIT_S = 45
DRY_LESSON_LIMIT_S = 300  # a lesson's CPU default scale on 2 busy cores
DRY_SLOWDOWN = 3  # a 2-core CPU runs the toy sizes of a benchmark slower than a GPU machine


@dataclass
class Part:
    """What one part did: its status (ok / failed / over time / skipped), time and output."""

    name: str
    limit_s: float
    status: str = "not run"
    seconds: float = 0.0
    output: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def run(cmd: list[str], limit_s: float, env: dict[str, str]) -> tuple[str, float, str]:
    """Run ``cmd`` with a wall-clock limit; return (status, seconds, output)."""
    start = time.perf_counter()
    if limit_s <= 1:
        return "over time (no budget left)", 0.0, ""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: kernels, workers
        out, _ = proc.communicate()
        return f"over time (stopped at {limit_s:.0f} s)", time.perf_counter() - start, out
    status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    return status, time.perf_counter() - start, out


def device_lines(env: dict[str, str]) -> str:
    """Device, torch and CUDA versions, as seen by the python that runs the parts."""
    probe = (
        "import torch, os, platform;"
        "print('torch', torch.__version__, '| CUDA', torch.version.cuda,"
        " '| cuda available', torch.cuda.is_available());"
        "print('GPU', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none');"
        "print('CPU', platform.processor() or platform.machine(), '|', os.cpu_count(), 'cores')"
    )
    status, _, out = run([sys.executable, "-c", probe], 60, env)
    return out.strip() if status == "ok" else f"device probe {status}: {out.strip()}"


def lesson_numbers(path: Path) -> str:
    """The text every code cell of an executed notebook printed, cell by cell."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    chunks = []
    for i, cell in enumerate(cells):
        texts = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                texts.append("".join(out["text"]))
            elif "text/plain" in out.get("data", {}) and "image/png" not in out["data"]:
                texts.append("".join(out["data"]["text/plain"]))
        text = "\n".join(t.rstrip() for t in texts if t.strip())
        if text and "<kernel-free twin" not in text:
            chunks.append(f"[cell {i}]\n{text}")
    return "\n".join(chunks)


def fence(text: str) -> str:
    return "```text\n" + (text.strip() or "(no output)") + "\n```"


def report(path: Path, parts: list[Part], *, dry: bool, device: str, total_s: float) -> None:
    """Write the markdown report (called after every part, so a crash still leaves one)."""
    mode = ("DRY RUN: CPU only, toy sizes. These are not GPU figures; they prove the "
            "script works." if dry else f"Full check, budget {BUDGET_S} s.")
    lines = [
        "# GPU check",
        "",
        f"Written by `make gpu-check{' DRY_RUN=1' if dry else ''}` (tools/gpu_check.py) on "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. {mode}",
        "",
        fence(device),
        "",
        f"Total: {total_s:.0f} s.",
        "",
        "| part | status | time (s) | limit (s) |",
        "| --- | --- | ---: | ---: |",
    ]
    lines += [f"| {p.name} | {p.status} | {p.seconds:.0f} | {p.limit_s:.0f} |" for p in parts]
    for p in parts:
        lines += ["", f"## {p.name}", ""]
        if p.extra:
            for key, value in p.extra.items():
                lines += [f"{key}:", "", fence(value), ""]
        else:
            lines += [fence(p.output[-6000:])]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU only, toy sizes")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks",
                        help="where GPU.md and the executed FULL lessons (gpu/) go")
    parser.add_argument("--parts", default="tests,benchmarks,lessons",
                        help="comma-separated subset of tests,benchmarks,lessons")
    parser.add_argument("--bench", action="append", choices=[b.name for b in BENCHES],
                        help="run only this benchmark (repeatable; default: all)")
    parser.add_argument("--lesson-limit", type=float, help="override each lesson's limit (s)")
    args = parser.parse_args()
    wanted = set(args.parts.split(","))
    if not wanted <= {"tests", "benchmarks", "lessons"}:
        parser.error(f"--parts takes tests, benchmarks, lessons; got {args.parts!r}")
    dry = args.dry_run
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               MPLBACKEND="Agg")
    if dry:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the same code on the CPU
    device = device_lines(env)
    if not dry and "cuda available True" not in device:
        print(f"no CUDA device visible:\n{device}\nuse --dry-run (make gpu-check DRY_RUN=1)")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    notebooks = args.out / "gpu"
    report_path = args.out / "GPU.md"
    start = time.perf_counter()
    parts: list[Part] = []

    def left() -> float:
        return BUDGET_S - (time.perf_counter() - start) if not dry else 3600.0

    def record(part: Part) -> None:
        parts.append(part)
        print(f"{part.name}: {part.status} in {part.seconds:.0f} s", flush=True)
        report(report_path, parts, dry=dry, device=device, total_s=time.perf_counter() - start)

    py = sys.executable
    if "tests" in wanted:
        part = Part("gpu-marked tests", min(TESTS_LIMIT_S, left()))
        part.status, part.seconds, part.output = run(
            [py, "-m", "pytest", "-m", "gpu", "tests/", "-q", "-p", "no:cacheprovider"],
            part.limit_s, env)
        if part.status == "ok" and " skipped" in part.output and " passed" not in part.output:
            part.status += " (all skipped: no CUDA)"
        record(part)
    if "benchmarks" in wanted:
        for bench in (b for b in BENCHES if not args.bench or b.name in args.bench):
            limit = bench.limit_s * (DRY_SLOWDOWN if dry else 1)
            part = Part(f"benchmark: {bench.name}", min(limit, left()))
            script = str(ROOT / "benchmarks" / bench.script)
            runs = ([("cpu", "dry run, toy size", ["--device", "cpu", *bench.dry_args])] if dry
                    else [("cuda", "GPU", ["--device", "cuda", *bench.gpu_args]),
                          ("cpu", "CPU counterpart, same script",
                           ["--device", "cpu", *bench.cpu_args])])
            statuses, spent = [], 0.0
            for short, label, extra in runs:
                status, seconds, out = run([py, script, *extra], part.limit_s - spent, env)
                spent += seconds
                statuses.append(f"{short}: {status}")
                part.extra[f"{label} (`{bench.script} {' '.join(extra)}`, {status})"] = out
            part.status, part.seconds = "; ".join(statuses), spent
            record(part)
    if "lessons" in wanted:
        notebooks.mkdir(parents=True, exist_ok=True)
        for number, notebook, limit in LESSONS:
            part = Part(f"lesson {number} at {'CPU (default)' if dry else 'FULL'} scale",
                        min(args.lesson_limit or (DRY_LESSON_LIMIT_S if dry else limit), left()))
            target = notebooks / Path(notebook).name
            part.status, part.seconds, part.output = run(
                [py, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                 f"--ExecutePreprocessor.timeout={int(part.limit_s)}", "--output",
                 str(target.resolve()), notebook], part.limit_s, env)
            if part.status == "ok":
                saved = f"numbers printed (executed notebook: `gpu/{target.name}`)"
                part.extra[saved] = lesson_numbers(target)
            record(part)
    failed = [p.name for p in parts if "ok" not in p.status or "fail" in p.status
              or "over time" in p.status]
    print(f"report: {report_path}" + (f"; not ok: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
