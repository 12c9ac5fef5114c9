# The commands of README.md. Each target installs what it needs first.
#
#   make book    execute the lessons (cached) and build the PUBLIC edition of the book in
#                _build/html: exercise pages as the students' version (no solutions, no
#                hidden tests, no mark schemes). This is the edition to publish.
#   make instructor-book  the instructor edition in _build/instructor/html: solutions,
#                hidden tests and mark schemes, folded. For teachers only; never publish it.
#   make test    the public edition built from the committed outputs, library tests (with
#                the check that the public edition leaks no answer), every lesson re-run by
#                nbval (what CI runs)
#   make bench   run every benchmarks/*.py
#   make gpu-check  the prepared GPU check (DRY_RUN=1: on the CPU, toy sizes)
#   make assignments  build the nbgrader course (student versions in course/release)
#   make screenshots  open the built book in headless Chromium, check it, save screenshots
#   make classroom    a whole class on this machine: JupyterHub, nbgrader's exchange, a
#                teacher and two students (root; loopback only; classroom/README.md)
#   make clean   remove build outputs (not the virtualenv)

SHELL := bash
.SHELLFLAGS := -euo pipefail -c

# The active virtualenv if there is one, else ./.venv, created on first use.
VENV := $(or $(VIRTUAL_ENV),.venv)
PY := $(VENV)/bin/python
JB := $(VENV)/bin/jupyter-book
INSTALLED := $(VENV)/.wide-networks-installed

BOOK_FLAGS := -W -n --keep-going
LESSONS := $(wildcard lessons/*.ipynb)
BENCHMARKS := $(wildcard benchmarks/*.py)

.PHONY: install book instructor-book test bench clean screenshots assignments gpu-check classroom

install: $(INSTALLED)

$(PY):
	$$(command -v python3.11 || command -v python3) -m venv $(VENV)

# torch first and pinned: a torch 2.13.0 that is already there, of any build (+cpu,
# +cu126, ...), satisfies the pin and is kept; an unpinned torch can pull a multi-GB
# CUDA build from PyPI.
$(INSTALLED): requirements.txt pyproject.toml | $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# jupyter-cache keys only on the code cells, and Sphinx re-reads only changed pages, so
# a lesson executed with an older ntk_lib (or other packages) would never be re-run:
# drop both the cache and Sphinx's saved environments when either changes.
_build/.ntk_lib-stamp: $(wildcard ntk_lib/*.py) $(INSTALLED)
	rm -rf _build/.jupyter_cache _build/.doctrees _build/editions/*/_build/.doctrees
	mkdir -p _build
	touch $@

# Each edition is built from a staging folder _build/editions/EDITION (tools/editions.py:
# the repository linked, the exercises notebooks rewritten), then its HTML is copied out.
# $(call edition,EDITION,EXTRA FLAGS,OUTPUT DIR)
define edition
	$(PY) tools/editions.py $(1) $(2)
	$(JB) build _build/editions/$(1) --path-output _build/editions/$(1) $(BOOK_FLAGS) $(3)
	rm -rf $(4) && mkdir -p $(dir $(4)) && cp -a _build/editions/$(1)/_build/html $(4)
endef

book: install _build/.ntk_lib-stamp
	$(call edition,public,,,_build/html)
	@echo "The public edition of the book is at $(CURDIR)/_build/html/index.html"

instructor-book: install _build/.ntk_lib-stamp
	$(call edition,instructor,,,_build/instructor/html)
	@echo "The INSTRUCTOR edition (solutions, hidden tests: do not publish it) is at" \
	  "$(CURDIR)/_build/instructor/html/index.html"

# make test renders the committed outputs (--no-execute) of a fresh public edition, then
# tests/test_editions.py searches it for every answer line (PUBLIC_BOOK_HTML makes that
# test fail, rather than skip, when the HTML is missing).
test: install
	$(PY) -m ruff check ntk_lib
	$(call edition,public,--no-execute,--all,_build/html)
	PUBLIC_BOOK_HTML=_build/html $(PY) -m pytest tests/
ifneq ($(LESSONS),)
	$(PY) -m pytest --nbval --nbval-current-env --nbval-sanitize-with lessons/sanitize.cfg lessons/
else
	@echo "No lessons yet: nothing for nbval to run."
endif

# The nbgrader course directory course/ (git-ignored) from lessons/*_exercises.ipynb:
# source/ refreshed from the lessons, student versions in course/release/<NN_slug>/, each
# source checked to pass its tests and each student version to fail them. See
# book/teaching.md and tools/assignments.py.
assignments: install
	$(PY) tools/assignments.py --course course build

# A reader's check in headless Chromium of the built book (math, figures, every twin's
# sliders driven in the browser, no dead widget): screenshots in _build/screenshots.
# Chromium from Debian and MathJax from the npm registry are installed when missing, so the
# check reaches nothing beyond the loopback. Build the book first (make book).
MATHJAX ?= _build/node_modules/mathjax
screenshots: install
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	test -d $(MATHJAX) || npm install --silent --prefix _build mathjax@3
	$(PY) tools/screenshots.py --mathjax $(MATHJAX)

# The whole GPU check in one command, budgeted to 8 minutes on one data-centre GPU: gpu tests,
# GPU benchmarks next to their CPU counterparts, lessons 08 and 10 at FULL scale; writes
# benchmarks/GPU.md and benchmarks/gpu/*.ipynb. DRY_RUN=1: the same on the CPU, toy sizes.
gpu-check: install
	$(PY) tools/gpu_check.py $(if $(DRY_RUN),--dry-run)

# A class run end to end on this machine (as root: it creates and removes three Unix
# accounts): JupyterHub from classroom/jupyterhub_config.py on 127.0.0.1, the proxy from
# npm (classroom/package-lock.json), nbgrader's exchange; release, fetch, submit, collect,
# autograde, manual grade, feedback, with permission and score checks. At most 25 min.
# CLASSROOM_FLAGS="--break world-readable" breaks the exchange on purpose: it must fail.
CLASSROOM_TIMEOUT ?= 1500
classroom: install
	$(PY) -m pip install -q -r classroom/requirements.txt
	command -v node >/dev/null && command -v npm >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq nodejs npm; }
	test -x classroom/node_modules/.bin/configurable-http-proxy || \
	  npm ci --prefix classroom --no-audit --no-fund
	timeout -k 120 $(CLASSROOM_TIMEOUT) $(PY) classroom/run_class.py $(CLASSROOM_FLAGS)

bench: install
	for script in $(BENCHMARKS); do echo "== $$script"; $(PY) "$$script"; done

clean:
	rm -rf _build .pytest_cache ntk_lib.egg-info
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +
