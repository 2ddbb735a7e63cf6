# README.md's first two commands: `make demo` (set-up + main job) and `make test` (set-up + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STEPS ?= 1500
DEMO_OUT ?= runs/demo
DEMO_FLAGS ?=

.PHONY: install demo test lint bench clean

install: $(STAMP)

# torch first and pinned: 2.13.0 is the CPU wheel on disk; a looser pin pulls GBs of CUDA wheels. torchvision
# (extra `tv`, --arch tv:...) with it: 0.28.0 is the release built for torch 2.13.0.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 torchvision==0.28.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Redis + the reward service + the learner training through them, on loopback (rss demo --help).
demo: install
	$(VENV)/bin/rss demo --steps $(DEMO_STEPS) --out $(DEMO_OUT) $(DEMO_FLAGS)

# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
test: install
	@$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: install
	$(VENV)/bin/ruff check rss_core learner reward_service rss tests examples deploy

bench: install
	$(VENV)/bin/rss bench convergence --json runs/bench-convergence.json

clean:
	rm -rf $(VENV) runs .pytest_cache
