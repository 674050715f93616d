# Conventional targets. The two set-up commands of the README are `make demo` and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: fuzz help install stack-start stack-stop stack-status topics migrate ingress worker demo test test-fast lint format openapi schema eval bench chaos clean k8s-rules soak

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

install:  ## install system packages (if missing) and the Python package into .venv
	@deploy/bootstrap.sh

stack-start: install  ## start Kafka, Redis and PostgreSQL on 127.0.0.1 (harmless to repeat)
	@deploy/stack.sh start

stack-stop:  ## stop exactly what stack-start started
	@deploy/stack.sh stop

stack-status:  ## one line per service
	@deploy/stack.sh status

topics: stack-start  ## create every topic with explicit partitions and replication
	@set -a; eval "$$(deploy/stack.sh env)"; set +a; $(PY) -m pipeline topics create

migrate: stack-start  ## apply CRM store migrations
	@set -a; eval "$$(deploy/stack.sh env)"; set +a; $(PY) -m pipeline store migrate

demo: install  ## run the whole pipeline locally, push demo reports through it, show the CRM store, stop
	@deploy/demo.sh

test: install  ## the full test suite (starts the local stack itself when needed)
	@$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install  ## skip the slow fault-injection suites
	@$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

chaos: install  ## fault-injection suite on a private stack + 3-broker cluster (docs/chaos.md)
	@$(PY) -m pytest -m chaos tests/chaos -p no:cacheprovider $(PYTEST_ARGS)

lint: install  ## ruff
	@.venv/bin/ruff check pipeline tests demo bench examples fuzz
	@.venv/bin/ruff format --check pipeline tests demo bench examples fuzz

format: install
	@.venv/bin/ruff format pipeline tests demo bench examples
	@.venv/bin/ruff check --fix pipeline tests demo bench examples

openapi: install  ## regenerate docs/openapi.json (the HTTP contract) from the code
	@$(PY) -m pipeline.openapi docs/openapi.json

schema: install  ## regenerate the JSON Schema shipped to downstream consumers
	@$(PY) -c "import json; from pipeline.envelope import json_schema; \
	open('pipeline/schemas/report.v1.schema.json','w').write(json.dumps(json_schema(), indent=2, ensure_ascii=False)+'\n')"

k8s-rules: install  ## regenerate deploy/k8s/prometheus-rule.yaml from deploy/prometheus/crm-rules.yml
	@$(PY) deploy/prometheus/k8s_rule.py > deploy/k8s/prometheus-rule.yaml

eval: install  ## triage accuracy, macro-F1, kelurahan resolution, grouping precision/recall
	@$(PY) bench/eval_triage.py

bench: install  ## benchmark (issue #5) on a private stack on other ports: bench/results/latest.json + plot (BENCH_ARGS=--quick)
	@$(PY) -m pipeline bench $(BENCH_ARGS)

DURATION ?= 2h
soak: install  ## realistic traffic for DURATION (2h) on a private stack, memory/lag/loss judged: bench/results/soak-latest.*
	@$(PY) -m pipeline.bench.soak --duration $(DURATION) $(SOAK_ARGS)

clean:  ## remove local state (stops the stack first)
	@deploy/stack.sh stop || true
	@[ -L .stack/postgres ] && rm -rf "$$(readlink -f .stack/postgres)" || true
	rm -rf .stack test-artifacts

FUZZ_SECONDS ?= 60
fuzz: install  ## run every parser's atheris fuzz target for FUZZ_SECONDS each (crashes: ./crash-*)
	@for t in $$($(PY) -c "from fuzz.targets import TARGETS; print(' '.join(TARGETS))"); do \
	  echo "== fuzz $$t ($(FUZZ_SECONDS)s)"; \
	  $(PY) fuzz/run.py $$t -max_total_time=$(FUZZ_SECONDS) 2>/tmp/crm-fuzz-$$t.log || \
	    { tail -n 40 /tmp/crm-fuzz-$$t.log; exit 1; }; \
	  grep -E '^Done' /tmp/crm-fuzz-$$t.log || true; done
