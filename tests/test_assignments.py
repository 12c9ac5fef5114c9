"""The nbgrader round trip of every lesson's exercises notebook, headless.

For each ``lessons/NN_slug_exercises.ipynb`` (found by pattern, so new lessons are
picked up), in a temporary course directory built by ``tools/assignments.py``:

- its nbgrader metadata is valid (nbgrader's schema and this course's rules);
- the student version (``nbgrader generate_assignment``) contains no line of a solution
  or of a hidden test, and no outputs;
- autograded (``nbgrader autograde``, embedded SQLite gradebook): the source notebook
  gets full marks, the blank student version zero, and the student version with the first
  exercise solved gets the first exercise's points and not all of them.

Autograding executes each submission in a fresh kernel (three per lesson), so these are
the slow tests of the suite: about 10-15 s per lesson on a laptop CPU.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# nbgrader 0.9's gradebook code triggers SQLAlchemy 2 autoflush warnings ("... not in
# session, add operation ... will not proceed") while recording a submission; the scores
# it records are checked below.
pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")


def _load_tool():
    path = ROOT / "tools" / "assignments.py"
    spec = importlib.util.spec_from_file_location("wide_networks_assignments", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


A = _load_tool()
LESSONS = A.lesson_notebooks()
NAMES = list(LESSONS)
# What nbgrader 0.9 puts in place of a solution region (ClearSolutions.code_stub).
STUB_LINES = {"# YOUR CODE HERE", "raise NotImplementedError()"}
MARKERS = (A.BEGIN_SOLUTION, A.END_SOLUTION, A.BEGIN_HIDDEN, A.END_HIDDEN)


def cells(path: Path) -> list[dict]:
    return json.loads(Path(path).read_text(encoding="utf-8"))["cells"]


def by_id(path: Path) -> dict[str, dict]:
    return {
        A.nbgrader_meta(c)["grade_id"]: c for c in cells(path) if A.nbgrader_meta(c).get("grade_id")
    }


def autograded_tests(path: Path) -> dict[str, float]:
    """grade_id -> points of the autograded test cells (graded code cells, not solutions)."""
    return {
        A.nbgrader_meta(c)["grade_id"]: float(A.nbgrader_meta(c)["points"])
        for c in cells(path)
        if A.nbgrader_meta(c).get("grade") and not A.nbgrader_meta(c).get("solution")
    }


def split_source(path: Path) -> tuple[Counter, Counter]:
    """(lines nbgrader must remove, lines it keeps) of a source notebook, stripped, as counts."""
    removed, kept = Counter(), Counter()
    for cell in cells(path):
        solution, rest = A.regions(A.cell_source(cell), A.BEGIN_SOLUTION, A.END_SOLUTION)
        hidden, rest = A.regions("\n".join(rest), A.BEGIN_HIDDEN, A.END_HIDDEN)
        removed.update(ln.strip() for ln in solution + hidden if ln.strip())
        kept.update(ln.strip() for ln in rest if ln.strip())
    return removed, kept


def release_path(course: Path, name: str) -> Path:
    return course / "release" / name / A.notebook_name(name)


def first_exercise_solved(course: Path, name: str, dst: Path) -> tuple[str, list[str]]:
    """Write the student version with the first exercise's solution cells filled in.

    Fills the solution cells up to the first autograded test cell that follows one, with
    the source's code minus the BEGIN/END SOLUTION lines (what a student would write).
    Returns that test cell's grade_id and the solution cells filled.
    """
    source = cells(course / "source" / name / A.notebook_name(name))
    filled, first_test = [], None
    for cell in source:
        meta = A.nbgrader_meta(cell)
        if meta.get("solution") and not meta.get("grade"):
            filled.append(meta["grade_id"])
        elif meta.get("grade") and filled:
            first_test = meta["grade_id"]
            break
    solutions = by_id(course / "source" / name / A.notebook_name(name))
    nb = json.loads(release_path(course, name).read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        grade_id = A.nbgrader_meta(cell).get("grade_id")
        if grade_id in filled:
            text = A.cell_source(solutions[grade_id])
            markers = (A.BEGIN_SOLUTION, A.END_SOLUTION)
            cell["source"] = "\n".join(
                ln for ln in text.splitlines() if not any(m in ln for m in markers)
            )
    dst.mkdir(parents=True)
    (dst / A.notebook_name(name)).write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return first_test, filled


@pytest.fixture(scope="session")
def course(tmp_path_factory) -> Path:
    """A course directory with every lesson in source/ (nothing generated yet)."""
    root = tmp_path_factory.mktemp("course")
    A.build_course(root)
    return root


@pytest.fixture(scope="session")
def released(course):
    """released(name): the course, with ``name``'s student version generated (once)."""

    @cache
    def generate(name: str) -> Path:
        A.generate(course, [name])
        return course

    return generate


@pytest.fixture(scope="session")
def graded(released, tmp_path_factory):
    """graded(name): (scores by student, first test's grade_id) after one autograde run."""

    @cache
    def run(name: str):
        course = released(name)
        subs = tmp_path_factory.mktemp(f"submissions-{name}")
        (subs / "solution").mkdir()
        A.copy_notebook(course / "source" / name / A.notebook_name(name),
                        subs / "solution" / A.notebook_name(name))
        (subs / "blank").mkdir()
        A.copy_notebook(release_path(course, name), subs / "blank" / A.notebook_name(name))
        first_test, _ = first_exercise_solved(course, name, subs / "partial")
        for student in ("solution", "blank", "partial"):
            A.submit(course, name, student, subs / student)
        return A.autograde(course, name), first_test

    return run


def test_lessons_have_exercises():
    assert NAMES, "no lessons/*_exercises.ipynb found"


def test_teaching_page_points_match_the_notebooks():
    """The points in book/teaching.md's table are the notebooks' (`tools/assignments.py points`)."""
    page = (ROOT / "book" / "teaching.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` .*\| ([\d.]+) \| [^|]+ \|$", page, re.M)
    assert rows, "no assignment table found in book/teaching.md"
    wrong = {
        name: (float(pts), sum(A.points(LESSONS[name]).values()) if name in LESSONS else None)
        for name, pts in rows
        if name not in LESSONS or float(pts) != sum(A.points(LESSONS[name]).values())
    }
    assert not wrong, f"book/teaching.md: assignment -> (points listed, in the notebook): {wrong}"


@pytest.mark.parametrize("name", NAMES)
def test_metadata_is_valid_for_nbgrader(name):
    problems = A.check_metadata(LESSONS[name])
    assert not problems, f"{LESSONS[name].name}:\n" + "\n".join(problems)


def test_course_config(course):
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import Execute

    config = A.load_config(course)
    assert CourseDirectory(config=config).course_id == "wide-networks"
    assert CourseDirectory(config=config).db_url == f"sqlite:///{course.resolve() / 'gradebook.db'}"
    assert Execute(config=config).timeout == A.TIMEOUT >= 300


@pytest.mark.parametrize("name", NAMES)
def test_release_has_no_solution_or_hidden_test(released, name):
    course = released(name)
    removed, kept = split_source(course / "source" / name / A.notebook_name(name))
    assert removed, "the source notebook has no solution or hidden-test lines"
    text = "\n".join(A.cell_source(c) for c in cells(release_path(course, name)))
    release = Counter(ln.strip() for ln in text.splitlines() if ln.strip())
    # A removed line may also occur outside the removed regions (kept), as often as there.
    leaked = sorted(ln for ln in removed if ln not in STUB_LINES and release[ln] > kept[ln])
    assert not leaked, f"solution or hidden-test lines left in the student version: {leaked}"
    assert not [m for m in MARKERS if m in text], "nbgrader markers left in the student version"
    assert "raise NotImplementedError()" in text


@pytest.mark.parametrize("name", NAMES)
def test_release_keeps_visible_tests_and_clears_outputs(released, name):
    course = released(name)
    source = by_id(course / "source" / name / A.notebook_name(name))
    release = cells(release_path(course, name))
    for cell in release:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, A.cell_source(cell)
        assert "execution" not in cell["metadata"], "run timings left in the student version"
    for grade_id in autograded_tests(release_path(course, name)):
        _, visible = A.regions(A.cell_source(source[grade_id]), A.BEGIN_HIDDEN, A.END_HIDDEN)
        shown = A.cell_source(by_id(release_path(course, name))[grade_id])
        assert shown.strip() == "\n".join(visible).strip(), f"{grade_id}: visible tests changed"
    assert set(autograded_tests(release_path(course, name))) == set(autograded_tests(LESSONS[name]))


@pytest.mark.parametrize("name", NAMES)
def test_autograde_solution_gets_full_marks(graded, name):
    result, _ = graded(name)
    total = sum(autograded_tests(LESSONS[name]).values())
    got = result["solution"]
    failed = {k: v for k, v in got.cells.items() if v[0] < v[1]}
    assert got.score == got.max_score == total, f"scored {got.score}/{got.max_score}: {failed}"


@pytest.mark.parametrize("name", NAMES)
def test_autograde_blank_gets_zero(graded, name):
    result, _ = graded(name)
    got = result["blank"]
    passed = {k: v for k, v in got.cells.items() if v[0] > 0}
    assert got.score == 0 and not passed, f"the blank student version scored {got.score}: {passed}"
    assert got.max_score == sum(autograded_tests(LESSONS[name]).values())


@pytest.mark.parametrize("name", NAMES)
def test_autograde_partial_gets_partial_marks(graded, name):
    result, first_test = graded(name)
    if first_test is None or len(autograded_tests(LESSONS[name])) < 2:
        pytest.skip("a single exercise: no partial submission to make")
    got = result["partial"]
    assert got.cells[first_test][0] == got.cells[first_test][1] > 0, got.cells
    assert 0 < got.score < got.max_score, f"partial submission scored {got.score}/{got.max_score}"
