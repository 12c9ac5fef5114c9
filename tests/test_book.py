"""The book's configuration is consistent: table of contents, citations, lessons, API page.

The book build itself (`jupyter-book build -W -n`) runs in `make test`, after pytest.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "lessons").glob("*.ipynb"))
PAGES = sorted((ROOT / "book").glob("*.md"))


def toc_files() -> list[str]:
    """Every `file:` of _toc.yml (root included), as written there (no suffix)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        for chapter in part["chapters"]:
            files.append(chapter["file"])
            files.extend(section["file"] for section in chapter.get("sections", []))
    return files


def markdown_text(path: Path) -> str:
    """The prose of a page or notebook (markdown cells only)."""
    if path.suffix == ".md":
        return path.read_text()
    cells = json.loads(path.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def bib_keys() -> list[str]:
    text = (ROOT / "book" / "references.bib").read_text()
    return re.findall(r"^@\w+\s*\{\s*([^,\s]+)\s*,", text, flags=re.MULTILINE)


def test_toc_files_exist():
    missing = [
        f
        for f in toc_files()
        if not any((ROOT / f).with_suffix(s).is_file() for s in (".md", ".ipynb"))
    ]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


def test_every_lesson_is_in_the_toc():
    listed = set(toc_files())
    absent = [p.name for p in LESSONS if f"lessons/{p.stem}" not in listed]
    assert not absent, f"lessons missing from _toc.yml: {absent}"


def test_bib_keys_are_unique():
    keys = bib_keys()
    assert keys, "no entries found in book/references.bib"
    assert len(keys) == len(set(keys)), "duplicate keys in book/references.bib"


@pytest.mark.parametrize("path", PAGES + LESSONS, ids=lambda p: p.name)
def test_citations_are_in_the_bibliography(path):
    known = set(bib_keys())
    cited = {
        key.strip()
        for keys in re.findall(r"\{(?:foot)?cite(?::\w+)?\}`([^`]+)`", markdown_text(path))
        for key in keys.split(",")
    }
    assert cited <= known, f"{path.name} cites keys not in references.bib: {cited - known}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_kernel_is_python3(path):
    kernelspec = json.loads(path.read_text())["metadata"].get("kernelspec", {})
    assert kernelspec.get("name") == "python3", f"{path.name}: kernelspec {kernelspec}"


def test_api_page_documents_every_public_module():
    public = {p.stem for p in (ROOT / "ntk_lib").glob("*.py") if not p.stem.startswith("_")}
    api_page = (ROOT / "book" / "api.md").read_text()
    documented = set(re.findall(r"automodule:: ntk_lib\.(\w+)", api_page))
    assert documented == public, (
        f"book/api.md documents {sorted(documented)}; the public modules are {sorted(public)}"
    )


def test_notebooks_are_tidy():
    """No run timings in cell metadata; solutions collapsed in the book (tools/tidy_notebooks.py)."""
    for path in sorted((ROOT / "lessons").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        for i, cell in enumerate(nb["cells"]):
            meta = cell.get("metadata", {})
            assert "execution" not in meta, f"{path.name} cell {i}: run python tools/tidy_notebooks.py"
            if cell["cell_type"] == "code" and meta.get("nbgrader", {}).get("solution"):
                assert "hide-input" in meta.get("tags", []), f"{path.name} cell {i}: solution not collapsed"


# --- what the online reader sees: no dead controls, no noise, no overflowing code ---------

CODE_COLUMN = 88  # characters the book's code boxes show without a horizontal scrollbar
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PROGRESS = re.compile(r"\d+%\|[^|\n]*\||\d+(\.\d+)?(it/s|s/it)\]")
CONTROLS = re.compile(r"\binteract(ive)?\(|\b\w*(Slider|Dropdown|ToggleButtons)\(")


def _code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def _text(output: dict) -> str:
    data = output.get("data", {})
    return "".join(output.get("text", "")) + "".join(data.get("text/plain", ""))


@pytest.mark.parametrize(
    "path", [p for p in LESSONS if not p.stem.endswith("_exercises")], ids=lambda p: p.stem
)
def test_code_lines_fit_the_book_column(path):
    """Lesson code fits the code column; longer lines anywhere (the exercises' checks, outputs)
    wrap in the browser (_static/code-wrap.css) rather than scroll out of view."""
    long = [
        f"cell {i}: {line[:40]}... ({len(line)} chars)"
        for i, cell in enumerate(_code_cells(path))
        for line in "".join(cell["source"]).splitlines()
        if len(line) > CODE_COLUMN
    ]
    assert not long, f"{path.name}: code lines over {CODE_COLUMN} characters: {long}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_no_progress_bar_or_dead_widget_in_the_book(path):
    """Progress bars are never committed; an ipywidgets control is removed from the book
    (tag remove-output, tools/tidy_notebooks.py) and followed by its kernel-free twin."""
    cells = _code_cells(path)
    for i, cell in enumerate(cells):
        for out in cell.get("outputs", []):
            assert not PROGRESS.search(_text(out)), f"{path.name} cell {i}: progress bar"
        shows_view = any(WIDGET_VIEW in out.get("data", {}) for out in cell.get("outputs", []))
        control = bool(CONTROLS.search("".join(cell["source"])))
        if shows_view:
            assert control, f"{path.name} cell {i}: a widget view that is not a control " \
                            "(a progress bar?) is committed"
        if control and shows_view:
            assert "remove-output" in cell["metadata"].get("tags", []), \
                f"{path.name} cell {i}: tag the control's cell remove-output (tidy_notebooks)"
            later = "".join(_text(o) for c in cells[i + 1:] for o in c.get("outputs", []))
            assert "<kernel-free twin" in later, \
                f"{path.name} cell {i}: no kernel-free twin (ntk_lib.plotting.twin) after it"


def test_the_book_wraps_long_code_lines():
    css = (ROOT / "_static" / "code-wrap.css").read_text()
    assert "div.highlight pre" in css and "white-space: pre-wrap" in css
