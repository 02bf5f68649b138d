# The two commands (see README): `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

LOCK_VENV := .lock-venv

.PHONY: demo test faults soak bench evaluate ablate schemas lock

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ required"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[local,test,bench]"
	@touch $(STAMP)

demo: $(STAMP)  ## stream the sample articles through real workers and print the stories
	$(VENV)/bin/story-worker demo

test: $(STAMP)  ## every test: unit, integration (real broker + Redis), bounded fault suite
	$(VENV)/bin/pytest -q

faults: $(STAMP)  ## only the fault suite (bounded)
	$(VENV)/bin/pytest -q -m faults

soak: $(STAMP)  ## the fault suite at soak sizes
	SOAK=1 $(VENV)/bin/pytest -q -m faults

bench: $(STAMP)  ## throughput and memory figures
	$(PY) bench/bench_pipeline.py && $(PY) bench/bench_dedup.py && $(PY) bench/bench_cluster.py && $(PY) bench/bench_embedding.py && $(PY) bench/bench_ner.py

evaluate: $(STAMP)  ## quality figures on ../shared/data
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) ../shared/tools/evaluate.py

ablate: $(STAMP)  ## clustering quality per signal switched off, on ../shared/data
	$(PY) bench/ablate_cluster.py

schemas: $(STAMP)
	$(VENV)/bin/story-worker schemas --write

lock:  ## resolve pyproject.toml afresh in a scratch venv and pin the result in constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "lock with Python 3.11: pins differ by version"'
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q --disable-pip-version-check --upgrade pip
	$(LOCK_VENV)/bin/pip install -q --disable-pip-version-check ".[local,test,bench]"
	{ sed -n '/^#/p' constraints.txt; $(LOCK_VENV)/bin/pip freeze --all --exclude story-worker; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV)
