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
    written ASSIGNMENT [STUDENT]               the written answers waiting for a grader,
                                               with the mark scheme (no JupyterHub needed)
    grade ASSIGNMENT STUDENT GRADE_ID POINTS [--comment TEXT]   record a hand-given score
    feedback ASSIGNMENT                        nbgrader generate_feedback (no answers leak)
    timing [ASSIGNMENT ...]                    autograde each source once: seconds per
                                               submission (wall and CPU) on this machine
    points                                     the points table of book/teaching.md

Writing an assignment (the conventions ``tests/test_assignments.py`` checks)
---------------------------------------------------------------------------

An assignment assesses understanding, not transcription (see the exercise policy in
book/teaching.md). Cells, with ``grade_id`` s of the form ``exNN-<item>-<role>``:

- ``exNN-setup``: one locked code cell (imports, ``from ntk_lib.grading import ...``,
  seeds). No IPython magics (``%``/``!``) anywhere: the tests also run the notebook's code
  in plain Python. The whole notebook runs in seconds on one CPU core.
- Task text: plain markdown, ``## Exercise k: title (P points)``, saying for a measured
  quantity the tolerance the grader uses. It never prints the value to be found.
- ``exNN-<item>-solution``: a code cell (solution: true, grade: false) with a skeleton
  (function signature, a comment saying what to return or which variable to set) around
  ``### BEGIN SOLUTION`` / ``### END SOLUTION``.
- ``exNN-<item>-test``: the autograded test (grade: true, solution: false, locked,
  points > 0). Visible checks first, then ``### BEGIN HIDDEN TESTS`` ...
  ``### END HIDDEN TESTS`` with checks on inputs the visible ones do not use (other
  sizes, seeds, depths, rates), so that an answer hard-coded to the visible checks fails.
  Only ``ntk_lib.grading`` checks (never a bare ``assert``): their messages say what was
  expected. Ends with ``print("Checks passed.")``. Every test cell has a hidden part.
- Kinds of items (>= 4 graded items: autograded test cells and written answers):
  *predict* (a number, or better a function of the setup such as
  ``predicted_exponent(depth)``, from theory; the visible check may test the form or one
  case), then *measure* (the same quantity measured with ``ntk_lib``, checked within the
  tolerance the prompt states); *derive* (a result printed nowhere in the lesson or the
  prompt, as a function of its parameters, checked numerically against an independent
  computation); *code* items; and one *written* answer.
- A written answer is two cells. ``exNN-<item>-prompt``: a locked markdown cell (grade
  and solution false, with a grade_id) with the question, then the mark scheme between
  the lines ``<!-- BEGIN MARK SCHEME -->`` and ``<!-- END MARK SCHEME -->``: criteria with
  their points (summing to the answer's points) and the usual wrong answers.
  ``exNN-<item>-answer``: a markdown cell, solution and grade true, with points, whose
  whole source is a model answer (nbgrader replaces it by "YOUR ANSWER HERE"). nbgrader
  removes the mark scheme from the student version and restores it (the prompt cell is
  locked) in the autograded notebook, so the formgrader shows it next to the answer.
- Variants for the tests: ``tests/assignment_variants/aNN.py`` defines ``HARDCODED``
  (solution grade_id -> a cell source that hard-codes what the visible checks accept; it
  must pass the visible checks and lose points on hidden ones), ``WRONG`` (solution
  grade_id -> a plausible wrong answer, e.g. off by a factor 2, that must lose points)
  and ``WRONG_MESSAGE`` (a substring the failing test's message must show, e.g.
  ``"expected"``).
- Then run ``python tools/tidy_notebooks.py`` on the notebook and commit it executed.

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

# nbgrader 0.9's default delimiters (ClearSolutions, ClearHiddenTests, ClearMarkScheme): a
# line that contains one opens or closes a region; the lessons write `### BEGIN SOLUTION`
# in code and `<!-- BEGIN MARK SCHEME -->` in markdown.
BEGIN_SOLUTION, END_SOLUTION = "BEGIN SOLUTION", "END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
BEGIN_MARK_SCHEME, END_MARK_SCHEME = "BEGIN MARK SCHEME", "END MARK SCHEME"

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

# The mark scheme of a written answer sits in the locked markdown cell that asks the
# question, between BEGIN/END MARK SCHEME lines: generate_assignment removes it from the
# student version, and autograde restores the locked cell (mark scheme included) from the
# gradebook, so the formgrader shows it next to the student's answer. nbgrader only
# expects mark schemes in "task" cells; these are locked cells with a grade_id.
c.ClearMarkScheme.enforce_metadata = False

# Tracebacks in autograded notebooks (and so in the feedback and the formgrader) in plain
# Python form: the failing line only, not IPython's default few lines of context, which
# would show hidden tests next to a failing visible check.
c.Execute.extra_arguments = ["--InteractiveShell.xmode=Plain"]

# Feedback (generate_feedback) renders the autograded notebook, in which autograde restored
# the hidden tests and the mark schemes: drop both again (a failed hidden test still shows
# its error message).
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbgrader.preprocessors.ClearHiddenTests",
    "nbgrader.preprocessors.ClearMarkScheme",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]

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
        lines = text.splitlines()
        if sum(BEGIN_MARK_SCHEME in ln for ln in lines) != sum(END_MARK_SCHEME in ln for ln in lines):
            problems.append(f"{where}: unbalanced {BEGIN_MARK_SCHEME!r} / {END_MARK_SCHEME!r}")
        if BEGIN_MARK_SCHEME in text and not (
            cell.cell_type == "markdown" and meta and meta.get("locked") and meta.get("grade_id")
            and not meta.get("grade") and not meta.get("solution")
        ):
            problems.append(f"{where}: a mark scheme belongs in a locked markdown cell with a "
                            "grade_id that is neither graded nor a solution (the question)")
        if (cell.cell_type == "markdown" and meta and meta.get("solution")
                and not meta.get("grade")):
            problems.append(f"{where}: a markdown solution cell must be graded (a written answer)")
        if cell.cell_type == "markdown" and meta and meta.get("grade") and meta.get("solution"):
            if not float(meta.get("points", 0)) > 0:
                problems.append(f"{where}: written answer without points")
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


@dataclass
class Structure:
    """What an exercises notebook asks and how it is graded (from its nbgrader metadata)."""

    autograded: dict[str, float]  # test cell grade_id -> points
    written: dict[str, float]  # written (manually graded markdown) answer grade_id -> points
    solutions: list[str]  # code solution cells' grade_ids, in order
    hidden: dict[str, int]  # test cell grade_id -> number of hidden-test lines
    mark_schemes: list[str]  # grade_ids of the cells holding a mark scheme
    feeds: dict[str, list[str]]  # solution grade_id -> test cells up to the next solution

    @property
    def graded_items(self) -> int:
        return len(self.autograded) + len(self.written)


def structure(path: Path) -> Structure:
    """The :class:`Structure` of a source exercises notebook."""
    autograded, written, solutions, hidden, schemes = {}, {}, [], {}, []
    feeds: dict[str, list[str]] = {}
    for cell in read_notebook(path)["cells"]:
        meta, text = nbgrader_meta(cell), cell_source(cell)
        grade_id = meta.get("grade_id")
        if BEGIN_MARK_SCHEME in text and grade_id:
            schemes.append(grade_id)
        if not meta:
            continue
        if meta.get("grade") and meta.get("solution") and cell["cell_type"] == "markdown":
            written[grade_id] = float(meta.get("points", 0))
        elif meta.get("grade") and not meta.get("solution") and cell["cell_type"] == "code":
            autograded[grade_id] = float(meta.get("points", 0))
            hidden[grade_id] = len([ln for ln in regions(text, BEGIN_HIDDEN, END_HIDDEN)[0]
                                    if ln.strip()])
            if solutions:
                feeds[solutions[-1]].append(grade_id)
        elif meta.get("solution") and cell["cell_type"] == "code":
            solutions.append(grade_id)
            feeds[grade_id] = []
    return Structure(autograded, written, solutions, hidden, schemes, feeds)


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
    """``nbgrader generate_assignment --force`` for each assignment (default: all in source/,
    in one nbgrader run)."""
    from nbgrader.converters import GenerateAssignment

    if assignments is None:
        assignments = ["*"]
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


def autograde_all(course_dir: Path) -> dict[str, dict[str, Score]]:
    """``nbgrader autograde --force`` every submission of every assignment, in one run.

    Returns assignment -> student -> :class:`Score` for the assignments in source/.
    """
    from nbgrader.converters import Autograde

    _run(Autograde, course_dir, "autograde of every submission",
         assignment_id="*", student_id="*", force=True, create_student=True)
    names = sorted(p.name for p in (Path(course_dir) / "source").iterdir() if p.is_dir())
    return {name: scores(course_dir, name) for name in names}


def feedback(course_dir: Path, assignment: str = "*") -> None:
    """``nbgrader generate_feedback --force`` (course/feedback/<student>/<assignment>/)."""
    from nbgrader.converters import GenerateFeedback

    _run(GenerateFeedback, course_dir, f"generate_feedback {assignment}",
         assignment_id=assignment, student_id="*", force=True)


def written_answers(course_dir: Path, assignment: str, student: str = "*") -> list[dict]:
    """The written answers of autograded submissions, with their mark scheme and score.

    One dict per (student, answer): student, grade_id, points, score (None until graded),
    answer (the student's text), question (the locked cell before it, mark scheme
    included, as autograde restored it).
    """
    out = []
    folder = Path(course_dir) / "autograded"
    graded = scores(course_dir, assignment)
    for path in sorted(folder.glob(f"{student}/{assignment}/{notebook_name(assignment)}")):
        who = path.parent.parent.name
        cells = read_notebook(path)["cells"]
        for i, cell in enumerate(cells):
            meta = nbgrader_meta(cell)
            if not (cell["cell_type"] == "markdown" and meta.get("grade") and meta.get("solution")):
                continue
            question = next((cell_source(c) for c in reversed(cells[:i])
                             if c["cell_type"] == "markdown" and nbgrader_meta(c).get("locked")), "")
            score = graded.get(who)
            waiting = score is None or meta["grade_id"] in score.manual
            out.append({
                "student": who, "grade_id": meta["grade_id"], "points": float(meta["points"]),
                "score": None if waiting else score.cells.get(meta["grade_id"], (None,))[0],
                "answer": cell_source(cell), "question": question,
            })
    return out


def grade_by_hand(course_dir: Path, assignment: str, student: str, grade_id: str,
                  points: float, comment: str | None = None) -> None:
    """Record a hand-given score (and a comment) for a written answer in the gradebook."""
    from nbgrader.api import Gradebook
    from nbgrader.coursedir import CourseDirectory

    _venv_on_path()
    coursedir = CourseDirectory(config=load_config(course_dir))
    with Gradebook(coursedir.db_url, course_id=coursedir.course_id) as gb:
        grade = gb.find_grade(grade_id, notebook_name(assignment)[:-6], assignment, student)
        if not 0 <= points <= grade.max_score:
            raise AssignmentError(f"points: expected 0 to {grade.max_score:g}, got {points:g}")
        grade.manual_score = float(points)
        grade.needs_manual_grade = False
        if comment is not None:
            gb.find_comment(grade_id, notebook_name(assignment)[:-6], assignment,
                            student).manual_comment = comment
        gb.db.commit()


def timing(course_dir: Path, assignments: Iterable[str] | None = None) -> dict[str, tuple[float, float]]:
    """Autograde each assignment's source once, as student "timing": assignment ->
    (wall seconds, CPU seconds of this process and the kernels it ran)."""
    import resource
    import time

    names = list(assignments or sorted(p.name for p in (Path(course_dir) / "source").iterdir()))
    result = {}
    for name in names:
        submit_dir = Path(course_dir) / "source" / name
        def cpu() -> float:
            return sum(getattr(resource.getrusage(w), f) for w in
                       (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for f in ("ru_utime", "ru_stime"))
        start, start_cpu = time.perf_counter(), cpu()
        autograde(course_dir, name, "timing", submit_dir)
        result[name] = (time.perf_counter() - start, cpu() - start_cpu)
    return result


@dataclass
class Score:
    """A submission's score from the gradebook."""

    score: float
    max_score: float
    cells: dict[str, tuple[float, float]] = field(default_factory=dict)  # grade_id -> (score, max)
    needs_manual_grade: bool = False
    manual: set[str] = field(default_factory=set)  # grade_ids still waiting for a grader


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
            manual = {g.name for nb in sub.notebooks for g in nb.grades if g.needs_manual_grade}
            result[sub.student.id] = Score(
                float(sub.score), float(sub.max_score), cells, bool(sub.needs_manual_grade),
                manual,
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
    w = sub.add_parser("written", help="the written answers waiting for a grader")
    w.add_argument("assignment")
    w.add_argument("student", nargs="?", default="*")
    w.add_argument("--all", action="store_true", help="graded ones too")
    g = sub.add_parser("grade", help="record the score of a written answer")
    g.add_argument("assignment")
    g.add_argument("student")
    g.add_argument("grade_id")
    g.add_argument("points", type=float)
    g.add_argument("--comment")
    f = sub.add_parser("feedback", help="generate feedback (HTML) for every graded student")
    f.add_argument("assignment", nargs="?", default="*")
    t = sub.add_parser("timing", help="time autograding each assignment's source once")
    t.add_argument("assignments", nargs="*")
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
        elif args.command == "written":
            for item in written_answers(args.course, args.assignment, args.student):
                if item["score"] is not None and not args.all:
                    continue
                state = "to grade" if item["score"] is None else f"{item['score']:g}"
                print(f"=== {item['student']} / {item['grade_id']} "
                      f"({state} / {item['points']:g} points)")
                print(item["question"].strip(), "\n--- answer:\n" + item["answer"].strip(), "\n")
        elif args.command == "grade":
            grade_by_hand(args.course, args.assignment, args.student, args.grade_id,
                          args.points, args.comment)
            print(f"{args.student} / {args.grade_id}: {args.points:g} recorded")
        elif args.command == "feedback":
            feedback(args.course, args.assignment)
            print(f"feedback in {args.course / 'feedback'}")
        elif args.command == "timing":
            build_course(args.course, args.lessons)
            generate(args.course)
            print("| assignment | autograde wall s | CPU s |\n| --- | --- | --- |")
            for name, (wall, cpu_s) in timing(args.course, args.assignments or None).items():
                print(f"| `{name}` | {wall:.1f} | {cpu_s:.1f} |")
    except AssignmentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
