# One entry point for humans and CI. Every target creates the virtualenv it needs first, so
# `make demo` and `make test` work on a fresh machine with nothing but Python 3.11.
# Another interpreter: `make PYTHON=python3.11 demo` (or a full path).

PYTHON ?= python3
# The pins (TensorFlow, its wheels) are for this Python; a virtualenv is only made with it.
REQUIRED_PYTHON := 3.11
CHECK_PYTHON = @command -v $(PYTHON) >/dev/null 2>&1 || { \
	echo "make: $(PYTHON) not found; this project needs Python $(REQUIRED_PYTHON): run make PYTHON=python$(REQUIRED_PYTHON) $(MAKECMDGOALS)" >&2; exit 2; }; \
	$(PYTHON) -c 'import sys; found = "%d.%d" % sys.version_info[:2]; sys.exit(0 if found == "$(REQUIRED_PYTHON)" else "make: this project needs Python $(REQUIRED_PYTHON) ($(PYTHON) is " + found + "); run make PYTHON=python$(REQUIRED_PYTHON) $(MAKECMDGOALS)")'
VENV := .venv
# Three test processes on two cores: a third of the suite's time is spent waiting (training and
# worker subprocesses, Lambda-like containers held to a 1024 MB share of a CPU, moto servers, a
# browser's think time), and a third process fills it (measured: 7 min 13 s with -n 2, 5 min
# 49 s with -n 3, same tests). Each process takes the next two tests when it is free, and the
# tests marked heavy come first (tests/conftest.py), so the processes finish together: 5 min
# 17 s with warm caches, 6 min 36 s on a fresh clone (which builds the test caches in .cache).
PYTEST_PARALLEL ?= -n 3 --dist load --maxschedchunk 2
BIN := $(VENV)/bin
CHECKOV_VENV := .venv-checkov
SAM_VENV := .venv-sam
# Keep TensorFlow's C++ start-up chatter out of every command's output.
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv test test-all test-real lint demo sample-model bench clean lock

$(BIN)/.installed: requirements.txt handler/requirements.txt
	$(CHECK_PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(CHECKOV_VENV)/bin/.installed: requirements-checkov.txt
	$(CHECK_PYTHON)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet -r requirements-checkov.txt
	touch $@

$(SAM_VENV)/bin/.installed: requirements-sam.txt
	$(CHECK_PYTHON)
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/pip install --quiet -r requirements-sam.txt
	touch $@

venv: $(BIN)/.installed

## lint: ruff on everything, the layers (import-linter, contracts in pyproject.toml), cfn-lint and
## checkov on the template.
lint: $(BIN)/.installed $(CHECKOV_VENV)/bin/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/cfn-lint template.yaml
	BC_SKIP_MAPPING=TRUE $(CHECKOV_VENV)/bin/checkov --quiet --compact --framework cloudformation --file template.yaml

## test: what CI runs — lint, then the unit, functional and end-to-end tiers (not the slow ones).
## Under 8 minutes on 2 quiet cores. Skips to expect, each listed with its reason at the end
## (pytest -ra): the real-photo tier without ../shared/real, the image check without a CPython
## 3.12, the wheel ABI check without network, the browser test without chromium.
test: lint $(SAM_VENV)/bin/.installed
	@echo "make test: the unit, functional, e2e and reliability tiers, about 7 minutes on 2 quiet cores;" \
		"skips are listed with their reasons at the end"
	SAM_TRANSLATOR_PYTHON=$(SAM_VENV)/bin/python $(BIN)/python -m pytest $(PYTEST_PARALLEL) -m "not slow" --durations=15

## test-all: also the slow tier (full-size load harness).
test-all: lint $(SAM_VENV)/bin/.installed
	SAM_TRANSLATOR_PYTHON=$(SAM_VENV)/bin/python $(BIN)/python -m pytest $(PYTEST_PARALLEL)

## test-real: the real-data tier — ImageNet MobileNetV2 on real grocery photos from ../shared/real
## (tests/real, then bench/real_photos.py: the frozen heads' table, about 10 min, and the whole
## training commands of the reference and the documented fine-tuned recipe, about 17 min: 2 quiet
## CPU cores, cold; the other recipes with --fine-tuned NAME ...).
test-real: $(BIN)/.installed
	$(BIN)/python -m pytest -n 0 -p no:randomly tests/real
	$(BIN)/python -m bench.real_photos

## sample-model: train the small stand-in model on generated data and publish it to ./artifacts.
sample-model: $(BIN)/.installed
	@if [ -f artifacts/latest.json ]; then \
		echo "artifacts/latest.json exists: using the published model (delete artifacts/ to retrain)"; \
	else \
		$(BIN)/python -m model_build.train; \
	fi

## demo: the main job on the embedded default — sample photos through the local moto stack.
demo: sample-model
	$(BIN)/python -m local_stack
	@echo
	@echo "Review the photos the model is unsure of, in a browser (two terminals):"
	@echo "  $(BIN)/python -m local_stack --serve   # this demo kept up, plus a few unsure photos"
	@echo "  $(BIN)/python -m review --open         # the console on it: http://127.0.0.1:8765/"

## bench: the side-by-side benchmarks (tens of minutes on a laptop; not part of the tests).
## BENCH_SCALE=1 runs the training benchmark at the reference's full dataset size (GPU box).
## Not here, run on their own (docs/benchmarks.md): bench.real_photos (make test-real),
## bench.decode_memory, bench.training_memory, bench.fuzz_image.
BENCH_SCALE ?= 0.05
bench: $(BIN)/.installed
	$(BIN)/python -m bench.training_pipeline --scale $(BENCH_SCALE)
	$(BIN)/python -m bench.model_runtimes
	$(BIN)/python -m bench.worker
	$(BIN)/python -m bench.load_with_faults

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(SAM_VENV) .pytest_cache .ruff_cache .hypothesis

## lock: re-resolve handler/requirements.lock, everything the worker image installs with the sha256
## of every file, on CPython 3.12 x86_64 Linux (the Lambda target) with pip-tools. Needs python3.12
## and PyPI; tests/unit/test_infra_lock.py fails until the lock matches handler/requirements.txt.
PYTHON312 ?= python3.12
LOCK_VENV := .venv-lock
lock:
	@test "$$(uname -sm)" = "Linux x86_64" || { echo "make lock resolves for Lambda's x86_64 Linux; run it on one (e.g. docker run --platform linux/amd64 python:3.12)"; exit 1; }
	$(PYTHON312) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet pip-tools==7.7.0
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes \
		--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
		--pip-args "--only-binary=:all:" --output-file handler/requirements.lock handler/requirements.txt
