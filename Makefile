# Every target sets up .venv itself. torch is pinned to the CPU build that
# installs from local disk; setup.cfg keeps an open range for real users.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TORCH_PIN ?= torch==2.13.0

.PHONY: install test test-fast test-zoo test-monailabel demo bench study clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e ".[test,plots,tracking,zoo]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n 2 --timeout 900 -q -ra --durations=15 tests

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -q -m "not slow" tests

# The model zoo's bundle checks that need no network (tools/zoo_verify.py), metadata first.
test-zoo: $(STAMP)
	$(PY) -m pytest -n 0 -q -p no:cacheprovider tests/bundle/test_bundle_metadata.py
	$(PY) tools/zoo_verify.py --workdir build/zoo --envs build/zoo-envs --overwrite

# A real MONAI Label 0.8.5 server with the exported segmentation bundle (tools/monailabel_check.py).
# Not part of `make test`: its own venv of about 8 GB (torch as MONAI Label's dependencies resolve it).
ML_VENV := .venv-monailabel
ML_STAMP := $(ML_VENV)/.installed-stamp

$(ML_STAMP): tools/monailabel-requirements.txt
	test -x $(ML_VENV)/bin/python || $(PYTHON) -m venv $(ML_VENV)
	$(ML_VENV)/bin/python -m pip install -q --upgrade pip
	$(ML_VENV)/bin/python -m pip install -q -r tools/monailabel-requirements.txt
	touch $(ML_STAMP)

test-monailabel: $(STAMP) $(ML_STAMP)
	$(ML_VENV)/bin/python tools/monailabel_check.py --workdir build/monailabel --project_python $(PY) --overwrite

demo: $(STAMP)
	$(PY) tools/demo.py --workdir demo

bench: $(STAMP)
	$(PY) tools/bench.py --workdir bench

# The few-label study (tools/study.py, docs/study.md), cpu budget: every fine-tune to its plateau, recorded
# in the committed ledger; many hours on 2 CPU cores, resumes where it stopped, and a run the ledger holds is
# not run again (commit the ledger as it grows). STUDY_BUDGET=small: two arms in about 90 min. Needs the real
# data (ACDC training patients and the Sunnybrook cine) in STUDY_DATA.
STUDY_DATA ?= ../shared/data
STUDY_BUDGET ?= cpu
study: $(STAMP)
	$(PY) tools/study.py --data $(STUDY_DATA)/acdc/training --out results/study-$(STUDY_BUDGET) \
		--budget $(STUDY_BUDGET) --extra_unlabelled $(STUDY_DATA)/sunnybrook/dicoms/SCD0000101 \
		--ledger docs/study/ledger.csv

clean:
	rm -rf $(VENV) $(ML_VENV) demo bench .pytest_cache build/zoo build/zoo-envs build/monailabel
