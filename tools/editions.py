"""Stage the two editions of the book: the public one (students) and the instructor one.

The exercises notebooks ``lessons/*_exercises.ipynb`` hold solutions, hidden tests and the
mark schemes of the written answers (they are the nbgrader *source*). The book must not
publish them, so each edition is built from a staging folder, ``_build/editions/EDITION``:
the repository's files, linked, with the exercises notebooks rewritten::

    public      what the nbgrader student version has: nbgrader's own ClearSolutions,
                ClearHiddenTests, ClearMarkScheme and ClearOutput run on the notebook
                (solutions become "YOUR CODE HERE" stubs, written answers "YOUR ANSWER
                HERE", hidden tests and mark schemes are gone, no outputs); the visible
                checks stay, unfolded, so a reader running the page gets feedback.
    instructor  the source notebooks with their committed outputs; solutions and tests
                folded (``hide-input``), each mark scheme and model answer in a folded
                dropdown.

Lessons (not exercises) are the same in both. The exercise pages are never executed by
the book build (their committed outputs are shown in the instructor edition, none in the
public one). Usage::

    python tools/editions.py public [--no-execute]       # -> _build/editions/public
    python tools/editions.py instructor [--no-execute]   # -> _build/editions/instructor

then ``jupyter-book build _build/editions/EDITION --path-output _build/editions/EDITION``
(the Makefile's ``book``, ``instructor-book`` and ``test`` targets do this and copy the HTML
to ``_build/html`` and ``_build/instructor/html``). ``--no-execute`` renders the
committed outputs of the lessons instead of executing them (what ``make test`` builds).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
EDITIONS = ("public", "instructor")
SUFFIX = "_exercises.ipynb"
# Never linked into a staging folder: build outputs, the nbgrader course, the lessons
# (staged file by file) and the configuration (rewritten).
SKIP = {"_build", "course", "build", "lessons", "_config.yml"}

BEGIN_MARK_SCHEME, END_MARK_SCHEME = "BEGIN MARK SCHEME", "END MARK SCHEME"
# What must never reach the public edition (nbgrader's delimiters, as tools/assignments.py).
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS",
           BEGIN_MARK_SCHEME, END_MARK_SCHEME)


def is_exercises(path: Path) -> bool:
    return path.name.endswith(SUFFIX)


def _grading(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_written_answer(cell) -> bool:
    """A manually graded answer: a markdown cell nbgrader marks as solution and grade."""
    g = _grading(cell)
    return cell.cell_type == "markdown" and bool(g.get("solution")) and bool(g.get("grade"))


def public_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student version of a source exercises notebook, as nbgrader 0.9 makes it.

    The same preprocessors, in the same order, as ``nbgrader generate_assignment``'s
    clearing steps (no gradebook needed); cell run timings dropped; solution and test cells
    unfolded, since nothing in them is hidden any more.
    """
    from nbgrader.preprocessors import (
        ClearHiddenTests,
        ClearMarkScheme,
        ClearOutput,
        ClearSolutions,
    )

    nb = nbformat.from_dict(nb)  # a copy
    resources: dict = {}
    for pre in (ClearSolutions(), ClearOutput(), ClearHiddenTests(),
                ClearMarkScheme(enforce_metadata=False)):
        nb, resources = pre.preprocess(nb, resources)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        tags = cell.metadata.get("tags", [])
        if _grading(cell) and "hide-input" in tags:
            tags.remove("hide-input")
    return nb


def _dropdown(title: str, body: str) -> str:
    # A MyST colon fence one colon longer than any inside the body.
    fence = ":" * max(3, 1 + max((len(m) for m in re.findall(r"^:{3,}", body, re.M)), default=0))
    return f"{fence}{{dropdown}} {title}\n{body.strip()}\n{fence}"


def instructor_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The source exercises notebook with mark schemes and model answers folded."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "markdown":
            continue
        if is_written_answer(cell):
            points = _grading(cell).get("points", 0)
            cell.source = _dropdown(f"Model answer (graded by hand, {points:g} points)",
                                    cell.source)
        elif BEGIN_MARK_SCHEME in cell.source:
            out, scheme, inside = [], [], False
            for line in cell.source.splitlines():
                if BEGIN_MARK_SCHEME in line:
                    inside, scheme = True, []
                elif END_MARK_SCHEME in line:
                    inside = False
                    out.append(_dropdown("Mark scheme (instructors only)", "\n".join(scheme)))
                elif inside:
                    scheme.append(line)
                else:
                    out.append(line)
            cell.source = "\n".join(out)
    return nb


def _link(src: Path, dst: Path) -> None:
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    elif dst.is_dir():
        shutil.rmtree(dst)
    dst.symlink_to(os.path.relpath(src, dst.parent))


def stage(edition: str, out: Path | None = None, execute: bool = True,
          root: Path = ROOT) -> Path:
    """Write the staging folder of ``edition`` and return it.

    Everything but the lessons is linked; lessons are linked one by one, exercises
    notebooks rewritten (only when their content changes, so Sphinx re-reads only them);
    ``_config.yml`` is the repository's with the jupyter-cache kept in the repository's
    ``_build/.jupyter_cache`` (shared by both editions), exercises pages never executed,
    and, with ``execute=False``, no execution at all.
    """
    if edition not in EDITIONS:
        raise ValueError(f"edition: expected one of {EDITIONS}, got {edition!r}")
    root = Path(root).resolve()
    out = Path(out or root / "_build" / "editions" / edition).resolve()
    (out / "lessons").mkdir(parents=True, exist_ok=True)
    for entry in root.iterdir():
        if entry.name.startswith(".") or entry.name in SKIP:
            continue
        _link(entry, out / entry.name)
    wanted = set()
    for path in sorted((root / "lessons").iterdir()):
        if path.name.startswith("."):
            continue
        wanted.add(path.name)
        target = out / "lessons" / path.name
        if not is_exercises(path):
            _link(path, target)
            continue
        nb = nbformat.read(str(path), as_version=4)
        nb = public_notebook(nb) if edition == "public" else instructor_notebook(nb)
        text = nbformat.writes(nb) + "\n"
        if target.is_symlink():
            target.unlink()
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
    for stale in (out / "lessons").iterdir():
        if stale.name not in wanted:
            stale.unlink() if not stale.is_dir() or stale.is_symlink() else shutil.rmtree(stale)

    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    settings = config.setdefault("execute", {})
    settings["cache"] = str(root / "_build" / ".jupyter_cache")
    settings["exclude_patterns"] = sorted(
        set(settings.get("exclude_patterns") or []) | {f"*{SUFFIX}"}
    )
    if not execute:
        settings["execute_notebooks"] = "off"
    text = yaml.safe_dump(config, sort_keys=False)
    (out / "_config.yml").write_text(text, encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("edition", choices=EDITIONS)
    parser.add_argument("--out", type=Path, help="staging folder (default _build/editions/EDITION)")
    parser.add_argument("--no-execute", action="store_true",
                        help="render the lessons' committed outputs instead of executing them")
    args = parser.parse_args(argv)
    out = stage(args.edition, args.out, execute=not args.no_execute)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
