"""Build the course's nbgrader assignments from the lessons, and autograde submissions.

The exercises notebooks ``lessons/NN_slug_exercises.ipynb`` are the single source of the
assignments: this script copies each one into an nbgrader course directory as assignment
``NN_slug`` and lets nbgrader 0.9 make the student version (solutions replaced by stubs,
hidden tests removed, outputs cleared)::

    course/
      nbgrader_config.py                  written here (course id, execution timeout)
      gradebook.db                        nbgrader's default SQLite gradebook
      source/NN_slug/NN_slug_exercises.ipynb    copied from lessons/ on every build
                                          (without the cells' run timings)
      release/NN_slug/NN_slug_exercises.ipynb   the student version
      submitted/<student>/NN_slug/...     what students hand in (nbgrader collect, or by hand)
      autograded/<student>/NN_slug/...    executed and scored by nbgrader autograde

Commands (``python tools/assignments.py [--course DIR] COMMAND``, course/ by default)::

    build [--no-validate]                      what `make assignments` runs
    autograde ASSIGNMENT [STUDENT [SUBMISSION_DIR]]
    scores ASSIGNMENT
    points                                     the points table of book/teaching.md

The functions below are what ``tests/test_assignments.py`` uses; book/teaching.md is the
teacher's guide. nbgrader's converters (what its ``generate_assignment`` and ``autograde``
commands run) run in this process, with the configuration read from the course
directory's ``nbgrader_config.py``, as the ``nbgrader`` command run from that directory
reads it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
COURSE = ROOT / "course"
COURSE_ID = "wide-networks"
SUFFIX = "_exercises"
# nbgrader stops a cell after 30 s by default; a lesson's cell on a busy laptop CPU can
# take longer, and a timeout scores the test as failed. 300 s still stops infinite loops.
TIMEOUT = 300

# nbgrader 0.9's default delimiters (ClearSolutions, ClearHiddenTests): a line that
# contains one opens or closes a region; the lessons write `### BEGIN SOLUTION` and so on.
BEGIN_SOLUTION, END_SOLUTION = "BEGIN SOLUTION", "END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"

CONFIG = f'''\
# nbgrader configuration of the course "Wide Networks".
# Written by `make assignments` (tools/assignments.py): edit that script, not this file.
# Settings of your own (an exchange root, JupyterHub, a logfile) go in
# nbgrader_config_local.py next to this file: it is read last and never overwritten.
c = get_config()  # noqa: F821

c.CourseDirectory.course_id = "{COURSE_ID}"

# The gradebook is nbgrader's default: the SQLite file gradebook.db in this directory.

# nbgrader's per-cell execution timeout defaults to 30 s (for autograde and validate);
# a cell that runs out of time scores zero, so give slow machines room.
c.Execute.timeout = {TIMEOUT}

load_subconfig("nbgrader_config_local.py")  # noqa: F821  (skipped when absent)
'''

log = logging.getLogger("assignments")


class AssignmentError(RuntimeError):
    """An nbgrader step failed; the message carries nbgrader's log."""


# --------------------------------------------------------------------------------------
# The lessons' exercises notebooks


def lesson_notebooks(lessons_dir: Path = LESSONS) -> dict[str, Path]:
    """Assignment name (the lesson's slug, ``NN_slug``) -> its exercises notebook."""
    found = sorted(Path(lessons_dir).glob(f"*{SUFFIX}.ipynb"))
    return {p.name[: -len(f"{SUFFIX}.ipynb")]: p for p in found}


def notebook_name(assignment: str) -> str:
    """The file name of an assignment's notebook: ``NN_slug_exercises.ipynb``."""
    return f"{assignment}{SUFFIX}.ipynb"


def read_notebook(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def cell_source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def nbgrader_meta(cell: dict) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def points(path: Path) -> dict[str, float]:
    """grade_id -> points of every graded cell of a notebook, in notebook order."""
    return {
        nbgrader_meta(c)["grade_id"]: float(nbgrader_meta(c).get("points", 0))
        for c in read_notebook(path)["cells"]
        if nbgrader_meta(c).get("grade")
    }


def regions(text: str, begin: str, end: str) -> tuple[list[str], list[str]]:
    """Split a cell's lines into (inside begin/end regions, outside), marker lines excluded.

    A line containing ``begin`` or ``end`` is a marker, as for nbgrader.
    """
    inside, outside, depth = [], [], 0
    for line in text.splitlines():
        if begin in line:
            depth += 1
        elif end in line:
            depth -= 1
        else:
            (inside if depth > 0 else outside).append(line)
    return inside, outside


def check_metadata(path: Path) -> list[str]:
    """Problems with a source exercises notebook's nbgrader metadata (empty: none).

    nbgrader's own schema check (what ``nbgrader validate`` and ``generate_assignment``
    apply), then this course's rules: solution code between BEGIN/END SOLUTION markers,
    hidden tests only in locked autograded test cells with points, balanced markers.
    """
    import nbformat
    from nbgrader.nbgraderformat import MetadataValidator, ValidationError

    problems: list[str] = []
    nb = nbformat.read(str(path), as_version=4)
    try:
        MetadataValidator().validate_nb(nb)
    except ValidationError as err:
        problems.append(f"nbgrader rejects the metadata: {err}")
    graded = 0
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader")
        text = cell.source
        where = f"cell {i}" + (f" ({meta.get('grade_id')})" if meta else "")
        for begin, end in ((BEGIN_SOLUTION, END_SOLUTION), (BEGIN_HIDDEN, END_HIDDEN)):
            lines = text.splitlines()
            if sum(begin in ln for ln in lines) != sum(end in ln for ln in lines):
                problems.append(f"{where}: unbalanced {begin!r} / {end!r}")
        has_solution = BEGIN_SOLUTION in text
        has_hidden = BEGIN_HIDDEN in text
        if not meta:
            if has_solution or has_hidden:
                problems.append(f"{where}: has nbgrader markers but no nbgrader metadata "
                                "(nbgrader would copy it unchanged into the student version)")
            continue
        if meta.get("schema_version") != 3:
            problems.append(f"{where}: schema_version {meta.get('schema_version')}, expected 3")
        if cell.cell_type == "code" and meta.get("solution") and not meta.get("grade"):
            if not has_solution:
                problems.append(f"{where}: solution cell without {BEGIN_SOLUTION!r} markers "
                                "(nbgrader would replace the whole cell by a stub)")
        elif has_solution:
            problems.append(f"{where}: {BEGIN_SOLUTION!r} in a cell not marked as a solution")
        if meta.get("grade") and cell.cell_type == "code" and not meta.get("solution"):
            graded += 1
            if not meta.get("locked"):
                problems.append(f"{where}: autograded test cell is not locked (read-only)")
            if not float(meta.get("points", 0)) > 0:
                problems.append(f"{where}: autograded test cell has no points")
        elif has_hidden:
            problems.append(f"{where}: {BEGIN_HIDDEN!r} outside an autograded test cell")
    ids = [c.metadata["nbgrader"].get("grade_id") for c in nb.cells if "nbgrader" in c.metadata]
    duplicates = sorted({i for i in ids if i and ids.count(i) > 1})
    if duplicates:
        problems.append(f"grade_id used by more than one cell: {duplicates}")
    if not graded:
        problems.append("no autograded test cell (grade: true, solution: false)")
    return problems


# --------------------------------------------------------------------------------------
# The course directory and nbgrader


def build_course(course_dir: Path = COURSE, lessons_dir: Path = LESSONS) -> list[str]:
    """Write ``nbgrader_config.py`` and refresh ``source/`` from the lessons.

    Each assignment's source folder is replaced by a fresh copy of its lesson's exercises
    notebook; the gradebook, releases and submissions are left alone. Returns the
    assignment names.
    """
    course_dir = Path(course_dir)
    lessons = lesson_notebooks(lessons_dir)
    if not lessons:
        raise AssignmentError(f"no *{SUFFIX}.ipynb notebook in {lessons_dir}")
    (course_dir / "source").mkdir(parents=True, exist_ok=True)
    (course_dir / "nbgrader_config.py").write_text(CONFIG, encoding="utf-8")
    for name, notebook in lessons.items():
        target = course_dir / "source" / name
        if target.exists():
            shutil.rmtree(target)
        target.mkdir()
        copy_notebook(notebook, target / notebook_name(name))
    stale = sorted(
        p.name for p in (course_dir / "source").iterdir() if p.is_dir() and p.name not in lessons
    )
    if stale:
        log.warning("source/ holds assignments with no lesson (left alone): %s", ", ".join(stale))
    return list(lessons)


def copy_notebook(src: Path, dst: Path) -> None:
    """Copy a notebook without the cell timings of the author's last run.

    Executed cells carry ``metadata.execution`` (when each cell ran); nbgrader clears
    outputs but keeps that metadata, so it would reach the student version.
    """
    import nbformat

    nb = nbformat.read(str(src), as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(nb, str(dst))


def load_config(course_dir: Path = COURSE):
    """The course's nbgrader configuration, as ``nbgrader`` run in ``course_dir`` reads it."""
    from traitlets.config.loader import Config, PyFileConfigLoader

    course_dir = Path(course_dir).resolve()
    config = Config()
    config.merge(PyFileConfigLoader("nbgrader_config.py", path=str(course_dir)).load_config())
    config.CourseDirectory.root = str(course_dir)
    return config


def _venv_on_path() -> None:
    """Put this Python's bin/ first on PATH.

    nbgrader's Gradebook runs the ``alembic`` executable from PATH each time it opens the
    database; with the virtualenv's Python called by path (as the Makefile does) and the
    virtualenv not activated, that executable is not found.
    """
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bindir:
        os.environ["PATH"] = bindir + os.pathsep + path


def _run(app_class, course_dir: Path, what: str, **attrs) -> None:
    """Run an nbgrader converter (what the ``nbgrader`` command does) on the course."""
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.utils import capture_log

    _venv_on_path()
    config = load_config(course_dir)
    coursedir = CourseDirectory(config=config)
    for key in ("assignment_id", "student_id"):
        if key in attrs:
            setattr(coursedir, key, attrs.pop(key))
    app = app_class(coursedir=coursedir, config=config)
    for key, value in attrs.items():
        setattr(app, key, value)
    result = capture_log(app)
    if not result.get("success"):
        raise AssignmentError(
            f"{what} failed:\n{result.get('log', '')}\n{result.get('error', '')}".rstrip()
        )


def generate(course_dir: Path = COURSE, assignments: Iterable[str] | None = None) -> None:
    """``nbgrader generate_assignment --force`` for each assignment (default: all in source/)."""
    from nbgrader.converters import GenerateAssignment

    if assignments is None:
        assignments = sorted(p.name for p in (Path(course_dir) / "source").iterdir() if p.is_dir())
    for name in assignments:
        _run(GenerateAssignment, course_dir, f"generate_assignment {name}",
             assignment_id=name, force=True, create_assignment=True)


def validate(course_dir: Path, assignment: str) -> list[str]:
    """Problems found by ``nbgrader validate`` (source) and ``validate --invert`` (release).

    The source notebook must pass all its tests; the student version must pass none.
    """
    from nbgrader.validator import Validator

    config = load_config(course_dir)
    problems = []
    for folder, invert in (("source", False), ("release", True)):
        path = Path(course_dir) / folder / assignment / notebook_name(assignment)
        results = Validator(config=config, invert=invert).validate(str(path))
        for key, cells in results.items():
            for cell in cells:
                first = cell["source"].splitlines()[0] if cell["source"] else ""
                problems.append(f"{folder}/{assignment}: {key} cell starting {first!r}")
    return problems


def submit(course_dir: Path, assignment: str, student: str, submission_dir: Path) -> Path:
    """Place a submission folder at ``submitted/<student>/<assignment>/`` (replacing it)."""
    target = Path(course_dir) / "submitted" / student / assignment
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(submission_dir, target)
    return target


def autograde(
    course_dir: Path, assignment: str, student: str = "*", submission_dir: Path | None = None
) -> dict[str, Score]:
    """``nbgrader autograde --force`` a student's submission (default: every student's).

    With ``submission_dir`` the folder is first copied to ``submitted/<student>/<assignment>``.
    Returns the assignment's scores, as :func:`scores`.
    """
    from nbgrader.converters import Autograde

    if submission_dir is not None:
        if student == "*":
            raise AssignmentError("name the student whose submission this is")
        submit(course_dir, assignment, student, submission_dir)
    _run(Autograde, course_dir, f"autograde {assignment} for {student}",
         assignment_id=assignment, student_id=student, force=True, create_student=True)
    return scores(course_dir, assignment)


@dataclass
class Score:
    """A submission's score from the gradebook."""

    score: float
    max_score: float
    cells: dict[str, tuple[float, float]] = field(default_factory=dict)  # grade_id -> (score, max)
    needs_manual_grade: bool = False


def scores(course_dir: Path, assignment: str) -> dict[str, Score]:
    """student -> :class:`Score` of every autograded submission of ``assignment``."""
    from nbgrader.api import Gradebook
    from nbgrader.coursedir import CourseDirectory

    _venv_on_path()
    coursedir = CourseDirectory(config=load_config(course_dir))
    result = {}
    with Gradebook(coursedir.db_url, course_id=coursedir.course_id) as gb:
        for sub in gb.assignment_submissions(assignment):
            cells = {
                g.name: (float(g.score), float(g.max_score))
                for nb in sub.notebooks
                for g in nb.grades
            }
            result[sub.student.id] = Score(
                float(sub.score), float(sub.max_score), cells, bool(sub.needs_manual_grade)
            )
    return result


# --------------------------------------------------------------------------------------
# Command line


def exercise_titles(path: Path) -> list[str]:
    """The ``## Exercise N: ...`` headings of an exercises notebook."""
    titles = []
    for cell in read_notebook(path)["cells"]:
        if cell["cell_type"] == "markdown":
            titles += re.findall(r"^##\s+(Exercise[^\n]*)", cell_source(cell), flags=re.M)
    return titles


def points_table(lessons_dir: Path = LESSONS) -> str:
    """A markdown table: assignment, exercises, points (from the notebooks' metadata)."""
    rows = ["| assignment | exercises | points |", "| --- | --- | --- |"]
    for name, path in lesson_notebooks(lessons_dir).items():
        pts = points(path)
        rows.append(f"| `{name}` | {len(exercise_titles(path))} | {sum(pts.values()):g} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--course", type=Path, default=COURSE, help="course directory (default: course/)"
    )
    parser.add_argument("--lessons", type=Path, default=LESSONS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="refresh source/ from the lessons and generate release/")
    b.add_argument("--no-validate", action="store_true",
                   help="skip running each source (must pass) and release (must fail)")
    a = sub.add_parser("autograde", help="autograde submissions (one student's, or all)")
    a.add_argument("assignment")
    a.add_argument("student", nargs="?", default="*", help="default: every submitted student")
    a.add_argument("submission", nargs="?", type=Path,
                   help="folder to copy to submitted/<student>/<assignment>/ first")
    s = sub.add_parser("scores", help="print the autograded scores of an assignment")
    s.add_argument("assignment")
    sub.add_parser("points", help="print the points per assignment (markdown table)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        if args.command == "build":
            problems = {n: check_metadata(p) for n, p in lesson_notebooks(args.lessons).items()}
            bad = {n: p for n, p in problems.items() if p}
            if bad:
                raise AssignmentError("\n".join(f"{n}: {m}" for n, ps in bad.items() for m in ps))
            names = build_course(args.course, args.lessons)
            generate(args.course, names)
            for name in names:
                log.info("generated %s", args.course / "release" / name / notebook_name(name))
            if not args.no_validate:
                found = [p for name in names for p in validate(args.course, name)]
                if found:
                    raise AssignmentError("validation failed:\n" + "\n".join(found))
                log.info("validated: every source passes its tests, every release fails them")
            print(points_table(args.lessons))
        elif args.command == "autograde":
            result = autograde(args.course, args.assignment, args.student, args.submission)
            for student, score in sorted(result.items()):
                if args.student in ("*", student):
                    print(f"{student}: {score.score:g} / {score.max_score:g}")
        elif args.command == "scores":
            for student, result in sorted(scores(args.course, args.assignment).items()):
                print(f"{student}: {result.score:g} / {result.max_score:g}")
        elif args.command == "points":
            print(points_table(args.lessons))
    except AssignmentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
