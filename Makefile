# Linli — two commands: `make run` and `make test`. Both install what is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
export ACTION_ENDPOINT_URL ?= http://127.0.0.1:5055/webhook
export PYTHONPATH := $(CURDIR)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export SQLALCHEMY_SILENCE_UBER_WARNING ?= 1

.PHONY: run test install model bench unit chromium clean help

help:
	@echo "make run    install, train if needed, seed the demo community, start everything"
	@echo "make test   install, train if needed, run the whole suite"
	@echo "make bench  benchmarks (reports in var/bench/)"

$(STAMP): requirements/lock.txt requirements/rasa.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/lock.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --ignore-requires-python -r requirements/rasa.txt
	@touch $@

install: $(STAMP)

model: install
	$(PY) -m bot train

run: model
	$(PY) -m bot run

test: model chromium
	bash scripts/test.sh

bench: model
	$(PY) -m bot bench
	$(PY) -m bot bench-channels --out var/bench
	$(PY) -m bot bench-console --out var/bench

# The console's browser tests drive Debian's Chromium (Playwright never downloads one).
chromium:
	@test -x /usr/bin/chromium || apt-get install -y -q chromium \
		|| (apt-get update -q && apt-get install -y -q chromium)

clean:
	rm -rf var models/*.tar.gz
