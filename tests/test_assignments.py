"""The nbgrader round trip of every lesson's exercises notebook, headless.

For each ``lessons/NN_slug_exercises.ipynb`` (found by pattern, so new lessons are
picked up), with its variants ``tests/assignment_variants/aNN.py``:

- structure: nbgrader's metadata is valid (its schema and this course's rules, see
  ``tools/assignments.py``); at least four graded items, at least one written answer
  graded by hand with a mark scheme, a hidden part in every autograded test cell;
- the student version (``nbgrader generate_assignment``) contains no line of a solution,
  of a hidden test or of a mark scheme, and no outputs; the book's public edition
  (``tools/editions.py``) shows exactly the student version;
- autograded (``nbgrader autograde``, embedded SQLite gradebook), in ONE nbgrader run for
  every submission of every assignment:
  ``solution`` (the source) gets full marks on every autograded item, and its written
  answers are in the gradebook as needing a grader; ``blank`` (the student version) gets
  zero; ``hardcoded`` (the source with ``HARDCODED`` cells: they pass the visible checks,
  which is checked by running the student version's code) loses points on the hidden
  tests of each hard-coded cell; ``wrong`` (the source with ``WRONG`` cells) loses points
  on each, and the failing check's message shows ``WRONG_MESSAGE`` and what was expected.

Autograding executes each submission in a fresh kernel (four per assignment), so these are
the slow tests of the suite; ``test_autograde_time`` prints the time they took. While
writing an assignment, ``ASSIGNMENTS=01 python -m pytest tests/test_assignments.py`` runs
the tests of assignment 01 only (a comma-separated list of numbers).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import sys
import time
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = Path(__file__).resolve().parent / "assignment_variants"
# nbgrader 0.9's gradebook code triggers SQLAlchemy 2 autoflush warnings ("... not in
# session, add operation ... will not proceed") while recording a submission; the scores
# it records are checked below.
pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


A = _load(ROOT / "tools" / "assignments.py", "wide_networks_assignments")
E = _load(ROOT / "tools" / "editions.py", "wide_networks_editions")
LESSONS = A.lesson_notebooks()
# ASSIGNMENTS=01,05 runs the tests of those assignments only (while writing one).
ONLY = [a.strip() for a in os.environ.get("ASSIGNMENTS", "").split(",") if a.strip()]
NAMES = [n for n in LESSONS if not ONLY or n[:2] in ONLY]
STUDENTS = ("solution", "blank", "hardcoded", "wrong")
# What nbgrader 0.9 puts in place of a solution region (ClearSolutions.code_stub/text_stub).
STUB_LINES = {"# YOUR CODE HERE", "raise NotImplementedError()", "YOUR ANSWER HERE"}
MARKERS = (A.BEGIN_SOLUTION, A.END_SOLUTION, A.BEGIN_HIDDEN, A.END_HIDDEN,
           A.BEGIN_MARK_SCHEME, A.END_MARK_SCHEME)
MIN_GRADED_ITEMS = 4


def cells(path: Path) -> list[dict]:
    return json.loads(Path(path).read_text(encoding="utf-8"))["cells"]


def by_id(path: Path) -> dict[str, dict]:
    return {
        A.nbgrader_meta(c)["grade_id"]: c for c in cells(path) if A.nbgrader_meta(c).get("grade_id")
    }


def split_source(path: Path) -> tuple[Counter, Counter]:
    """(lines nbgrader must remove, lines it keeps) of a source notebook, stripped, as counts.

    Removed: solution regions, hidden tests, mark schemes, and whole written answers.
    """
    removed, kept = Counter(), Counter()
    for cell in cells(path):
        text = A.cell_source(cell)
        if cell["cell_type"] == "markdown" and A.nbgrader_meta(cell).get("solution"):
            removed.update(ln.strip() for ln in text.splitlines() if ln.strip())
            continue
        solution, rest = A.regions(text, A.BEGIN_SOLUTION, A.END_SOLUTION)
        hidden, rest = A.regions("\n".join(rest), A.BEGIN_HIDDEN, A.END_HIDDEN)
        scheme, rest = A.regions("\n".join(rest), A.BEGIN_MARK_SCHEME, A.END_MARK_SCHEME)
        removed.update(ln.strip() for ln in solution + hidden + scheme if ln.strip())
        kept.update(ln.strip() for ln in rest if ln.strip())
    return removed, kept


def release_path(course: Path, name: str) -> Path:
    return course / "release" / name / A.notebook_name(name)


def source_path(course: Path, name: str) -> Path:
    return course / "source" / name / A.notebook_name(name)


@cache
def variants(name: str):
    """The module ``tests/assignment_variants/aNN.py`` of assignment ``NN_slug``."""
    path = VARIANTS / f"a{name[:2]}.py"
    if not path.is_file():
        return None
    return _load(path, f"wide_networks_variants_{name[:2]}")


def without_markers(text: str) -> str:
    return "\n".join(ln for ln in text.splitlines()
                     if A.BEGIN_SOLUTION not in ln and A.END_SOLUTION not in ln)


def submission(base: Path, replace: dict[str, str], solutions_from: Path | None = None) -> dict:
    """The notebook at ``base`` with the cells ``replace`` names given new sources.

    With ``solutions_from``, every other solution cell gets that notebook's solution (as
    a student would write it: without the BEGIN/END SOLUTION lines).
    """
    nb = json.loads(Path(base).read_text(encoding="utf-8"))
    source = by_id(solutions_from) if solutions_from else {}
    for cell in nb["cells"]:
        meta = A.nbgrader_meta(cell)
        grade_id = meta.get("grade_id")
        if grade_id in replace:
            cell["source"] = replace[grade_id]
        elif solutions_from and meta.get("solution"):
            cell["source"] = without_markers(A.cell_source(source[grade_id]))
    return nb


def run_code(nb: dict) -> None:
    """Run a notebook's code cells in order, in this process (a fresh namespace)."""
    namespace = {"__name__": "__main__"}
    with contextlib.redirect_stdout(io.StringIO()):
        _run_cells(nb, namespace)


def _run_cells(nb: dict, namespace: dict) -> None:
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        code = A.cell_source(cell)
        try:
            exec(compile(code, f"<cell {i}>", "exec"), namespace)
        except Exception as err:
            grade_id = A.nbgrader_meta(cell).get("grade_id", f"cell {i}")
            raise AssertionError(f"{grade_id}: {type(err).__name__}: {err}") from err


# --------------------------------------------------------------------------------------
# Structure: no nbgrader run needed


def test_lessons_have_exercises():
    assert NAMES, "no lessons/*_exercises.ipynb found"


def test_teaching_page_points_match_the_notebooks():
    """The points in book/teaching.md's table are the notebooks' (`tools/assignments.py points`)."""
    page = (ROOT / "book" / "teaching.md").read_text(encoding="utf-8")
    # The table's rows: | `NN_slug` ({doc}`exercises <...>`) | items | points | time |
    rows = re.findall(r"^\| `(\w+)` \(\{doc\}.*\| ([\d.]+) \| [^|]+ \|$", page, re.M)
    assert rows, "no assignment table found in book/teaching.md"
    wrong = {
        name: (float(pts), sum(A.points(LESSONS[name]).values()) if name in LESSONS else None)
        for name, pts in rows
        if name not in LESSONS or float(pts) != sum(A.points(LESSONS[name]).values())
    }
    assert not wrong, f"book/teaching.md: assignment -> (points listed, in the notebook): {wrong}"
    assert {name for name, _ in rows} == set(LESSONS), "book/teaching.md: not every assignment listed"


@pytest.mark.parametrize("name", NAMES)
def test_metadata_is_valid_for_nbgrader(name):
    problems = A.check_metadata(LESSONS[name])
    assert not problems, f"{LESSONS[name].name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", NAMES)
def test_structure(name):
    """>= 4 graded items, a written answer with a mark scheme, hidden tests in every test."""
    s = A.structure(LESSONS[name])
    assert s.graded_items >= MIN_GRADED_ITEMS, (
        f"{s.graded_items} graded items (autograded tests {list(s.autograded)}, written "
        f"answers {list(s.written)}); at least {MIN_GRADED_ITEMS} expected")
    assert s.written, "no written answer graded by hand (markdown cell, solution + grade)"
    assert len(s.mark_schemes) >= len(s.written), (
        f"written answers {list(s.written)} but mark schemes only in {s.mark_schemes}")
    no_hidden = [g for g, n in s.hidden.items() if n == 0]
    assert not no_hidden, f"autograded test cells without hidden tests: {no_hidden}"
    feeding = [sol for sol, tests in s.feeds.items() if not tests]
    assert not feeding, f"solution cells with no autograded test after them: {feeding}"


@pytest.mark.parametrize("name", NAMES)
def test_variants_are_defined(name):
    v = variants(name)
    assert v is not None, f"tests/assignment_variants/a{name[:2]}.py is missing"
    solutions = set(A.structure(LESSONS[name]).solutions)
    for field in ("HARDCODED", "WRONG"):
        value = getattr(v, field, None)
        assert isinstance(value, dict) and value, f"a{name[:2]}.{field}: a non-empty dict expected"
        unknown = set(value) - solutions
        assert not unknown, f"a{name[:2]}.{field}: not solution cells of the notebook: {unknown}"
        assert all(isinstance(src, str) and src.strip() for src in value.values())
        leftover = [g for g, src in value.items() if any(m in src for m in MARKERS)]
        assert not leftover, f"a{name[:2]}.{field}: nbgrader markers in {leftover}"
    assert isinstance(getattr(v, "WRONG_MESSAGE", None), str) and v.WRONG_MESSAGE


@pytest.mark.parametrize("name", NAMES)
def test_public_edition_notebook_has_no_answers(name):
    """The book's public page: no solution, hidden test or mark scheme line, no marker."""
    import nbformat

    removed, kept = split_source(LESSONS[name])
    assert removed, "the source notebook has no solution or hidden-test lines"
    public = E.public_notebook(nbformat.read(str(LESSONS[name]), as_version=4))
    text = "\n".join(c.source for c in public.cells)
    shown = Counter(ln.strip() for ln in text.splitlines() if ln.strip())
    leaked = sorted(ln for ln in removed if ln not in STUB_LINES and shown[ln] > kept[ln])
    assert not leaked, f"answer lines in the public edition: {leaked}"
    assert not [m for m in MARKERS if m in text], "nbgrader markers in the public edition"
    assert all(not c.get("outputs") for c in public.cells)


# --------------------------------------------------------------------------------------
# nbgrader: one generate_assignment and one autograde run for everything


@pytest.fixture(scope="session")
def course(tmp_path_factory) -> Path:
    """A course directory with every lesson in source/ and every student version released."""
    root = tmp_path_factory.mktemp("course")
    A.build_course(root)
    if ONLY:
        for stale in (root / "source").iterdir():
            if stale.name not in NAMES:
                shutil.rmtree(stale)
    A.generate(root)
    return root


@pytest.fixture(scope="session")
def graded(course):
    """assignment -> student -> Score, after one nbgrader autograde of all submissions,
    and the seconds that run took."""
    for name in NAMES:
        src, rel = source_path(course, name), release_path(course, name)
        v = variants(name)
        subs = {
            "solution": submission(src, {}),
            "blank": submission(rel, {}),
        }
        if v is not None:
            subs["hardcoded"] = submission(rel, getattr(v, "HARDCODED", {}), solutions_from=src)
            subs["wrong"] = submission(rel, getattr(v, "WRONG", {}), solutions_from=src)
        for student, nb in subs.items():
            folder = course / "submitted" / student / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / A.notebook_name(name)).write_text(json.dumps(nb, indent=1), encoding="utf-8")
    start = time.perf_counter()
    result = A.autograde_all(course)
    return result, time.perf_counter() - start


def autograded_output(course: Path, student: str, name: str, grade_id: str) -> str:
    """The text outputs (tracebacks included) of a cell of an autograded notebook."""
    path = course / "autograded" / student / name / A.notebook_name(name)
    cell = by_id(path)[grade_id]
    out = []
    for o in cell.get("outputs", []):
        out.append("".join(o.get("text", "")))
        out.append(o.get("evalue", ""))
        out.append("\n".join(o.get("traceback", [])))
    return "\n".join(out)


def test_autograde_time(graded, capsys):
    _, seconds = graded
    kernels = sum(len(scores) for scores in graded[0].values())
    with capsys.disabled():
        print(f"\nnbgrader autograde: {len(graded[0])} assignments, {kernels} submissions "
              f"in {seconds:.0f} s ({seconds / max(kernels, 1):.1f} s per submission)")


def test_course_config(course):
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import ClearMarkScheme, Execute

    config = A.load_config(course)
    assert CourseDirectory(config=config).course_id == "wide-networks"
    assert CourseDirectory(config=config).db_url == f"sqlite:///{course.resolve() / 'gradebook.db'}"
    assert Execute(config=config).timeout == A.TIMEOUT >= 300
    assert ClearMarkScheme(config=config).enforce_metadata is False


@pytest.mark.parametrize("name", NAMES)
def test_release_has_no_solution_or_hidden_test(course, name):
    removed, kept = split_source(source_path(course, name))
    text = "\n".join(A.cell_source(c) for c in cells(release_path(course, name)))
    release = Counter(ln.strip() for ln in text.splitlines() if ln.strip())
    # A removed line may also occur outside the removed regions (kept), as often as there.
    leaked = sorted(ln for ln in removed if ln not in STUB_LINES and release[ln] > kept[ln])
    assert not leaked, f"solution or hidden-test lines left in the student version: {leaked}"
    assert not [m for m in MARKERS if m in text], "nbgrader markers left in the student version"
    assert "raise NotImplementedError()" in text


@pytest.mark.parametrize("name", NAMES)
def test_public_edition_is_the_student_version(course, name):
    import nbformat

    public = E.public_notebook(nbformat.read(str(LESSONS[name]), as_version=4))
    release = cells(release_path(course, name))
    assert [c.source for c in public.cells] == [A.cell_source(c) for c in release]


@pytest.mark.parametrize("name", NAMES)
def test_release_keeps_visible_tests_and_clears_outputs(course, name):
    source = by_id(source_path(course, name))
    release = cells(release_path(course, name))
    for cell in release:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, A.cell_source(cell)
        assert "execution" not in cell["metadata"], "run timings left in the student version"
    tests = A.structure(release_path(course, name)).autograded
    for grade_id in tests:
        _, visible = A.regions(A.cell_source(source[grade_id]), A.BEGIN_HIDDEN, A.END_HIDDEN)
        shown = A.cell_source(by_id(release_path(course, name))[grade_id])
        assert shown.strip() == "\n".join(visible).strip(), f"{grade_id}: visible tests changed"
    assert set(tests) == set(A.structure(LESSONS[name]).autograded)


@pytest.mark.parametrize("name", NAMES)
def test_autograde_solution_gets_full_marks(graded, name):
    got = graded[0][name]["solution"]
    s = A.structure(LESSONS[name])
    failed = {g: got.cells.get(g) for g, pts in s.autograded.items() if got.cells.get(g) != (pts, pts)}
    assert not failed, f"autograded items without full marks: {failed}"
    assert got.max_score == sum(s.autograded.values()) + sum(s.written.values())


@pytest.mark.parametrize("name", NAMES)
def test_written_answers_need_manual_grading(graded, name):
    s = A.structure(LESSONS[name])
    got = graded[0][name]["solution"]
    assert s.written, "no written answer"
    assert got.needs_manual_grade, "the gradebook does not flag the submission for a grader"
    missing = set(s.written) - got.manual
    assert not missing, f"written answers not flagged as needing a grader: {missing}"
    assert not (got.manual - set(s.written)), f"autograded cells need a grader: {got.manual}"


@pytest.mark.parametrize("name", NAMES)
def test_autograde_blank_gets_zero(graded, name):
    got = graded[0][name]["blank"]
    passed = {k: v for k, v in got.cells.items() if v[0] > 0}
    assert got.score == 0 and not passed, f"the blank student version scored {got.score}: {passed}"


@pytest.mark.parametrize("name", NAMES)
def test_hardcoded_answers_pass_the_visible_checks(course, name):
    """The HARDCODED variant is a real cheat: the student version's own checks pass."""
    v = variants(name)
    if v is None:
        pytest.fail(f"tests/assignment_variants/a{name[:2]}.py is missing")
    nb = submission(release_path(course, name), v.HARDCODED, solutions_from=source_path(course, name))
    run_code(nb)


@pytest.mark.parametrize("name", NAMES)
def test_autograde_hardcoded_loses_the_hidden_points(graded, name):
    v = variants(name)
    if v is None:
        pytest.fail(f"tests/assignment_variants/a{name[:2]}.py is missing")
    got = graded[0][name]["hardcoded"]
    feeds = A.structure(LESSONS[name]).feeds
    kept = {g: [(t, got.cells[t]) for t in feeds[g]] for g in v.HARDCODED
            if all(got.cells[t][0] == got.cells[t][1] for t in feeds[g])}
    assert not kept, f"hard-coded answers that kept all their points: {kept}"


@pytest.mark.parametrize("name", NAMES)
def test_autograde_wrong_answer_loses_points_and_says_what_was_expected(course, graded, name):
    v = variants(name)
    if v is None:
        pytest.fail(f"tests/assignment_variants/a{name[:2]}.py is missing")
    got = graded[0][name]["wrong"]
    feeds = A.structure(LESSONS[name]).feeds
    for grade_id in v.WRONG:
        failed = [t for t in feeds[grade_id] if got.cells[t][0] < got.cells[t][1]]
        assert failed, f"{grade_id}: the wrong answer kept all its points: " + str(
            {t: got.cells[t] for t in feeds[grade_id]})
        message = autograded_output(course, "wrong", name, failed[0])
        assert v.WRONG_MESSAGE in message, (
            f"{failed[0]}: {v.WRONG_MESSAGE!r} not in the feedback:\n{message[-1500:]}")
        assert "expected" in message, f"{failed[0]}: the feedback does not say what was expected"


# --------------------------------------------------------------------------------------
# After autograding: feedback and grading by hand (these change the gradebook: keep last)


def test_feedback_shows_no_hidden_test_or_mark_scheme(course, graded):
    A.feedback(course)
    for name in NAMES:
        secret = Counter()
        kept = "\n".join(split_source(LESSONS[name])[1])  # a hidden line may be part of a kept one
        for cell in cells(LESSONS[name]):
            text = A.cell_source(cell)
            hidden, _ = A.regions(text, A.BEGIN_HIDDEN, A.END_HIDDEN)
            scheme, _ = A.regions(text, A.BEGIN_MARK_SCHEME, A.END_MARK_SCHEME)
            secret.update(ln.strip() for ln in hidden + scheme if len(ln.strip()) > 20)
        for student in ("solution", "blank"):
            path = course / "feedback" / student / name / A.notebook_name(name).replace(".ipynb", ".html")
            assert path.is_file(), f"no feedback written for {student}/{name}"
            page = path.read_text(encoding="utf-8")
            import html as _html
            text = _html.unescape(re.sub(r"<[^>]+>", "", page))
            leaked = [ln for ln in secret if ln not in kept and ln in text]
            assert not leaked, f"{student}/{name} feedback shows hidden lines: {leaked[:5]}"
            assert not [m for m in MARKERS[2:] if m in page], f"{student}/{name}: markers in feedback"


@pytest.mark.parametrize("name", NAMES)
def test_grading_written_answers_from_the_command_line(course, graded, name):
    waiting = A.written_answers(course, name, "solution")
    s = A.structure(LESSONS[name])
    assert {w["grade_id"] for w in waiting} == set(s.written)
    for item in waiting:
        assert item["score"] is None
        assert A.BEGIN_MARK_SCHEME in item["question"], "the grader does not see the mark scheme"
        assert item["answer"].strip() and "YOUR ANSWER HERE" not in item["answer"]
    before = A.scores(course, name)["solution"].score
    item = waiting[0]
    A.grade_by_hand(course, name, "solution", item["grade_id"], item["points"] - 1, comment="ok")
    after = A.scores(course, name)["solution"]
    assert item["grade_id"] not in after.manual
    assert after.score == before + item["points"] - 1
    with pytest.raises(A.AssignmentError, match="points: expected 0 to"):
        A.grade_by_hand(course, name, "solution", item["grade_id"], item["points"] + 1)
