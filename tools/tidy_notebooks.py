"""Tidy lesson notebooks before committing them: python tools/tidy_notebooks.py lessons/*.ipynb

- drops the per-cell ``execution`` timings that Jupyter records (they vary run to run and
  nbgrader would copy them into student versions);
- tags every nbgrader solution and autograded-test cell ``hide-input``, so the book shows
  solutions (and the hidden tests of the teacher's version) collapsed.
"""

from __future__ import annotations

import sys

import nbformat


def tidy(path: str) -> None:
    """Rewrite the notebook at ``path`` in place (validated, nbformat 4)."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        grading = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and (grading.get("solution") or grading.get("grade")):
            tags = cell.metadata.setdefault("tags", [])
            if "hide-input" not in tags:
                tags.append("hide-input")
    nbformat.validate(nb)
    nbformat.write(nb, path)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        tidy(arg)
