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
