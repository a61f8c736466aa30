# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast install lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# vLLM is installed for its tests (engine arguments, sampling parameters, multimodal processor run on CPU);
	# it pins torch 2.14.0, given here so the resolver does not backtrack through older vLLM releases.
	$(PY) -m pip install --quiet -e '.[train,dev,vllm]' 'torch==2.14.0'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m emocaliber.demo --out runs/demo $(DEMO_ARGS)

# EMOCALIBER_REQUIRE_VLLM: the vLLM conformance tests fail, not skip, when vLLM is missing.
test: $(STAMP)
	EMOCALIBER_REQUIRE_VLLM=1 $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: $(STAMP)
	EMOCALIBER_REQUIRE_VLLM=1 $(PY) -m pytest -q -p no:cacheprovider -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check emocaliber data_prep recipes eval bench tests

clean:
	rm -rf $(VENV) runs
