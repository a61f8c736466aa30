# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast install lint clean browser

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# vLLM is installed for its tests (engine arguments, sampling parameters, multimodal processor run on CPU);
	# it pins torch 2.14.0, given here so the resolver does not backtrack through older vLLM releases.
	$(PY) -m pip install --quiet -e '.[train,dev,vllm]' 'torch==2.14.0'
	# The web page's gradio caps pillow below 13 and vLLM 0.33 needs pillow 13, so pip cannot resolve the serve
	# and vllm extras together: gradio goes in without its pillow cap, its other requirements as it states them
	# (the page's tests run it on pillow 13; docs/dependencies.md).
	$(PY) -m pip install --quiet --no-deps 'gradio==6.31.0' 'gradio-client==2.7.2'
	$(PY) -m pip install --quiet 'brotli>=1.2.1' 'groovy~=0.1' 'hf-gradio>=0.4.1,<1' 'pydub<1' 'pytz>=2017.2' 'safehttpx>=0.1.7,<0.2' \
		'semantic-version~=2.0' 'tomlkit>=0.12,<0.15'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m emocaliber.demo --out runs/demo $(DEMO_ARGS)

# EMOCALIBER_REQUIRE_VLLM: the vLLM conformance tests fail, not skip, when vLLM is missing.
test: $(STAMP) browser
	EMOCALIBER_REQUIRE_VLLM=1 $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: $(STAMP)
	EMOCALIBER_REQUIRE_VLLM=1 $(PY) -m pytest -q -p no:cacheprovider -m "not slow" $(PYTEST_ARGS)

# The page tests drive Debian's chromium (Playwright's own browser download is not used).
browser:
	command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

lint: $(STAMP)
	$(VENV)/bin/ruff check emocaliber data_prep recipes eval bench tests

clean:
	rm -rf $(VENV) runs
