"""Tidy lesson notebooks before committing them: python tools/tidy_notebooks.py lessons/*.ipynb

- drops the per-cell ``execution`` timings that Jupyter records (they vary run to run and
  nbgrader would copy them into student versions);
- tags every nbgrader solution and autograded-test cell ``hide-input``, so the book shows
  solutions (and the hidden tests of the teacher's version) collapsed;
- tags every cell that shows an ipywidgets control ``remove-output``: in the static book such
  a control would be dead, and its kernel-free twin (``ntk_lib.plotting.twin``, in the next
  cell) takes its place; the cell stays for people running the notebook.
"""

from __future__ import annotations

import re
import sys

import nbformat

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


CONTROLS = re.compile(
    r"\binteract(ive)?\(|\b\w*(Slider|Dropdown|ToggleButtons)\(|display\(\w*widget"
)


def _shows_widget(cell: nbformat.NotebookNode) -> bool:
    """An ipywidgets control (not a progress bar, which must not be committed at all)."""
    shown = any(WIDGET_VIEW in out.get("data", {}) for out in cell.get("outputs", []))
    return shown and bool(CONTROLS.search(cell.source))


def _tag(cell: nbformat.NotebookNode, tag: str) -> None:
    tags = cell.metadata.setdefault("tags", [])
    if tag not in tags:
        tags.append(tag)


def tidy(path: str) -> None:
    """Rewrite the notebook at ``path`` in place (validated, nbformat 4)."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        grading = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and (grading.get("solution") or grading.get("grade")):
            _tag(cell, "hide-input")
        if cell.cell_type == "code" and _shows_widget(cell):
            _tag(cell, "remove-output")
    nbformat.validate(nb)
    nbformat.write(nb, path)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        tidy(arg)
