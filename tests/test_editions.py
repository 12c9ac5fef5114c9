"""The two editions of the book (tools/editions.py): the public one leaks no answer.

- Staging: the public edition's exercises notebooks are nbgrader's student version, the
  instructor edition's keep everything and fold the mark schemes and model answers; the
  lessons are the same files in both.
- The built public edition (``make book`` or ``make test``, in ``_build/html``; another
  folder with ``PUBLIC_BOOK_HTML``): every line of every solution, hidden test, mark
  scheme and written model answer of the exercises notebooks is searched for in the text
  of every HTML page and every downloadable source (``_sources/``), as are nbgrader's
  delimiters. ``make test`` sets ``PUBLIC_BOOK_HTML``, so there a missing build fails;
  run alone without a build, that test is skipped.
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


E = _load(ROOT / "tools" / "editions.py", "wide_networks_editions")
A = _load(ROOT / "tools" / "assignments.py", "wide_networks_assignments")
EXERCISES = sorted((ROOT / "lessons").glob("*_exercises.ipynb"))
LESSONS = sorted(p for p in (ROOT / "lessons").glob("*.ipynb") if p not in EXERCISES)
# Lines shorter than this (after collapsing spaces) are too generic to search for
# (`return out`, `else:`, `)`).
MIN_CHARS = 16


def _collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def answer_lines(path: Path) -> tuple[set[str], set[str]]:
    """(code lines, prose lines) that only the instructor may see, from a source notebook.

    Solution regions and hidden tests (code), mark schemes and written model answers
    (prose); lines that also appear in what the student version keeps are left out.
    """
    code, prose, kept = set(), set(), set()
    for cell in nbformat.read(str(path), as_version=4).cells:
        text = cell.source
        if E.is_written_answer(cell):
            prose.update(text.splitlines())
            continue
        solution, rest = A.regions(text, A.BEGIN_SOLUTION, A.END_SOLUTION)
        hidden, rest = A.regions("\n".join(rest), A.BEGIN_HIDDEN, A.END_HIDDEN)
        scheme, rest = A.regions("\n".join(rest), A.BEGIN_MARK_SCHEME, A.END_MARK_SCHEME)
        (code if cell.cell_type == "code" else prose).update(solution + hidden)
        prose.update(scheme)
        kept.update(_collapse(ln) for ln in rest)
    code = {_collapse(ln) for ln in code} - kept
    return ({ln for ln in code if len(ln) >= MIN_CHARS},
            {_collapse(ln) for ln in prose} - kept)


def prose_fragments(line: str) -> list[str]:
    """The plain-text runs of a markdown line (math, code and emphasis removed) of >= 6 words.

    They are what survives rendering verbatim, so they can be searched in a page's text.
    """
    parts = re.split(r"\$[^$]*\$|`[^`]*`|[*_\[\]{}()|<>#\\]", line)
    return [_collapse(p) for p in parts if len(p.split()) >= 6 and len(_collapse(p)) >= 2 * MIN_CHARS]


def public_text(html_dir: Path) -> dict[str, str]:
    """relative path -> searchable text of each HTML page and downloadable source."""
    texts = {}
    for path in html_dir.rglob("*"):
        if not path.is_file():
            continue
        rel = str(path.relative_to(html_dir))
        raw = path.read_text(encoding="utf-8", errors="replace") if path.suffix in {
            ".html", ".ipynb", ".md", ".txt", ".py"} else None
        if raw is None:
            continue
        if path.suffix == ".html":
            text = html.unescape(re.sub(r"<[^>]+>", "", raw))
        elif path.suffix == ".ipynb":
            nb = json.loads(raw)
            text = "\n".join("".join(c.get("source", "")) for c in nb.get("cells", []))
        else:
            text = raw
        texts[rel] = raw + "\n" + _collapse(text)
    return texts


def teaching_material() -> str:
    """What is public by design: the lessons, the book's pages, the student versions."""
    parts = []
    for path in LESSONS:
        nb = nbformat.read(str(path), as_version=4)
        parts += [c.source for c in nb.cells]
    parts += [p.read_text(encoding="utf-8") for p in (ROOT / "book").glob("*.md")]
    # What the student versions show: a hidden line can be part of a visible one.
    for path in EXERCISES:
        parts += [c.source for c in E.public_notebook(nbformat.read(str(path), as_version=4)).cells]
    return _collapse("\n".join(parts))


# --------------------------------------------------------------------------------------
# Staging (fast: no build)


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    out = tmp_path_factory.mktemp("editions")
    return {e: E.stage(e, out / e, execute=False) for e in E.EDITIONS}


def test_staged_lessons_are_the_repository_files(staged):
    for folder in staged.values():
        for lesson in LESSONS:
            linked = folder / "lessons" / lesson.name
            assert linked.resolve() == lesson.resolve(), f"{linked} is not {lesson}"
        assert (folder / "_toc.yml").resolve() == (ROOT / "_toc.yml").resolve()


def test_staged_config_never_executes_exercises(staged):
    import yaml

    for edition, folder in staged.items():
        config = yaml.safe_load((folder / "_config.yml").read_text())
        assert "*_exercises.ipynb" in config["execute"]["exclude_patterns"], edition
        assert config["execute"]["execute_notebooks"] == "off", edition
        assert Path(config["execute"]["cache"]) == ROOT / "_build" / ".jupyter_cache"


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_staged_public_exercises_have_no_answers(staged, path):
    text = (staged["public"] / "lessons" / path.name).read_text(encoding="utf-8")
    nb = json.loads(text)
    lines = {_collapse(ln) for c in nb["cells"] for ln in "".join(c["source"]).splitlines()}
    code, prose = answer_lines(path)
    leaked = [ln for ln in code if ln in lines]
    leaked += [ln for ln in prose if ln and ln in lines]
    assert not leaked, f"answer lines in the public notebook: {leaked[:10]}"
    assert not [m for m in E.MARKERS if m in text]
    assert "raise NotImplementedError()" in text


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_staged_instructor_exercises_keep_everything(staged, path):
    nb = nbformat.read(str(staged["instructor"] / "lessons" / path.name), as_version=4)
    text = _collapse("\n".join(c.source for c in nb.cells))
    code, prose = answer_lines(path)
    missing = [ln for ln in code if ln not in text]
    missing += [f for ln in prose for f in prose_fragments(ln) if f not in text]
    assert not missing, f"answer lines missing from the instructor edition: {missing[:10]}"
    answers = [c for c in nb.cells if E.is_written_answer(c)]
    assert all(c.source.startswith(":::") and "{dropdown} Model answer" in c.source
               for c in answers), "written model answers are not folded"
    assert E.BEGIN_MARK_SCHEME not in text, "mark-scheme delimiters not turned into dropdowns"


def test_instructor_notebook_folds_mark_schemes():
    nb = nbformat.v4.new_notebook()
    prompt = nbformat.v4.new_markdown_cell(
        "Why?\n<!-- BEGIN MARK SCHEME -->\n- 1 point: because\n<!-- END MARK SCHEME -->\nEnd.")
    answer = nbformat.v4.new_markdown_cell("Because :::{note}\n::::")
    answer.metadata["nbgrader"] = {"grade": True, "solution": True, "points": 2}
    nb.cells = [prompt, answer]
    out = E.instructor_notebook(nb)
    assert out.cells[0].source == (
        "Why?\n:::{dropdown} Mark scheme (instructors only)\n- 1 point: because\n:::\nEnd.")
    assert out.cells[1].source.startswith(":::::{dropdown} Model answer (graded by hand, 2 points)")
    public = E.public_notebook(nb)
    assert public.cells[0].source == "Why?\nEnd."
    assert public.cells[1].source == "YOUR ANSWER HERE"


# --------------------------------------------------------------------------------------
# The built public edition


def public_html_dir() -> Path:
    given = os.environ.get("PUBLIC_BOOK_HTML")
    folder = Path(given) if given else ROOT / "_build" / "html"
    if not folder.is_absolute():
        folder = ROOT / folder
    if not (folder / "index.html").is_file():
        if given:
            pytest.fail(f"PUBLIC_BOOK_HTML={given}: no built book there (make book)")
        pytest.skip("no public edition built in _build/html (make book or make test)")
    return folder


def find_leaks(folder: Path) -> tuple[set, list]:
    """(nbgrader delimiters found, answer lines found) in a built book's files."""
    texts = public_text(folder)
    markers = {(rel, m) for rel, t in texts.items() for m in E.MARKERS if m in t}
    shared = teaching_material()
    leaks = []
    for path in EXERCISES:
        code, prose = answer_lines(path)
        needles = [ln for ln in code if ln not in shared]
        needles += [f for ln in prose for f in prose_fragments(ln) if f not in shared]
        for needle in needles:
            leaks += [(path.stem, rel, needle) for rel, t in texts.items() if needle in t]
    return markers, leaks


def test_leak_search_finds_a_planted_answer(tmp_path):
    """The search below can fail: a page with one hidden-test line, a download with a marker."""
    code, _ = answer_lines(EXERCISES[0])
    shared = teaching_material()
    needle = max((ln for ln in code if ln not in shared), key=len)
    (tmp_path / "page.html").write_text(f"<pre><span>{html.escape(needle)}</span></pre>")
    (tmp_path / "nb.ipynb").write_text(json.dumps({"cells": [{"source": ["# BEGIN SOLUTION"]}]}))
    markers, leaks = find_leaks(tmp_path)
    assert markers == {("nb.ipynb", "BEGIN SOLUTION")}
    assert ("page.html", needle) in {(rel, n) for _, rel, n in leaks}


def test_built_public_edition_leaks_no_answer():
    folder = public_html_dir()
    texts = public_text(folder)
    pages = [f"lessons/{p.stem}.html" for p in EXERCISES]
    missing = [p for p in pages if p not in texts]
    assert not missing, f"exercise pages missing from the built book: {missing}"
    not_public = [p for p in pages if "NotImplementedError" not in texts[p]]
    assert not not_public, f"not the public edition (no student stubs): {not_public}"
    downloads = [f"_sources/lessons/{p.name}" for p in EXERCISES]
    assert all(d in texts for d in downloads), "downloadable exercise notebooks missing"
    markers, leaks = find_leaks(folder)
    assert not markers, f"nbgrader delimiters in the public edition: {sorted(markers)[:10]}"
    assert not leaks, f"{len(leaks)} answer lines in the public edition, e.g. {leaks[:8]}"
