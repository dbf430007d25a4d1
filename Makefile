# The two commands of the README. Both create .venv and install what they need.
#   make demo   train a small char-level LSTM on the built-in corpus (90 s on 2 cores), then generate
#   make test   run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-numeric notebooks clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rnnlab train pydocs --preset cpu-90s --out runs/demo --overwrite
	@echo
	$(BIN)/rnnlab generate runs/demo --prompt "Return the " --length 600 --temperature 0.7 --seed 1 --no-repeat-ngram 12

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto

# The tests that assert on learned numbers, again, on other CPU kernels: oneDNN and MKL restricted to
# AVX2 (a CPU without AVX-512/AMX) and two threads per process. CI runs this after `make test`.
test-numeric: $(STAMP)
	ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 RNNLAB_TEST_THREADS=2 $(BIN)/python -m pytest -q -m numeric

# The notebooks (notebooks/*.ipynb), each run top to bottom in a fresh kernel; a failing cell fails.
# CI runs this after the tests. Their dependencies are the optional extra [notebooks].
$(VENV)/.notebooks: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[notebooks]'
	touch $@

notebooks: $(VENV)/.notebooks
	$(BIN)/python notebooks/run.py

clean:
	rm -rf $(VENV) runs notebooks/runs .pytest_cache
