# The commands of README.md. Each target installs what it needs first.
#
#   make book    execute the lessons (cached) and build the HTML book
#   make test    library tests, every lesson re-run by nbval, the book built from the
#                committed outputs (what CI runs)
#   make bench   run every benchmarks/*.py
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

.PHONY: install book test bench clean screenshots assignments classroom

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
# drop both the cache and Sphinx's saved environment when either changes.
_build/.ntk_lib-stamp: $(wildcard ntk_lib/*.py) $(INSTALLED)
	rm -rf _build/.jupyter_cache _build/.doctrees
	mkdir -p _build
	touch $@

book: install _build/.ntk_lib-stamp
	$(JB) build . $(BOOK_FLAGS)
	@echo "The book is at $(CURDIR)/_build/html/index.html"

# The same configuration with execution off, to render the committed outputs.
_build/config-noexec.yml: _config.yml | $(INSTALLED)
	mkdir -p _build
	$(PY) -c 'import sys, yaml; c = yaml.safe_load(open("_config.yml")); \
	  c["execute"]["execute_notebooks"] = "off"; yaml.safe_dump(c, sys.stdout)' > $@

test: install _build/config-noexec.yml
	$(PY) -m pytest tests/
ifneq ($(LESSONS),)
	$(PY) -m pytest --nbval --nbval-current-env --nbval-sanitize-with lessons/sanitize.cfg lessons/
else
	@echo "No lessons yet: nothing for nbval to run."
endif
	$(JB) build . $(BOOK_FLAGS) --all --config _build/config-noexec.yml

# The nbgrader course directory course/ (git-ignored) from lessons/*_exercises.ipynb:
# source/ refreshed from the lessons, student versions in course/release/<NN_slug>/, each
# source checked to pass its tests and each student version to fail them. See
# book/teaching.md and tools/assignments.py.
assignments: install
	$(PY) tools/assignments.py --course course build

# A reader's check in headless Chromium (apt-get install chromium) of the built book:
# screenshots in _build/screenshots. Offline, pass MATHJAX=path/to/node_modules/mathjax.
screenshots: install
	$(PY) tools/screenshots.py $(if $(MATHJAX),--mathjax $(MATHJAX))

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
