# The commands the README names. Each sets itself up on a fresh clone: `.venv` is created
# when absent and the core plus every plugin under plugins/ are installed in editable mode.
VENV ?= .venv
PY := $(VENV)/bin/python
PLUGINS := $(patsubst %/pyproject.toml,%,$(wildcard plugins/*/pyproject.toml))
DEMO_DIR ?= outputs/demo/$(shell date +%Y-%m-%d_%H-%M-%S)

.PHONY: setup test demo bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS))
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]" $(foreach p,$(PLUGINS),-e "$(p)[test]")
	touch $@

test: setup
	$(PY) -m pytest

demo: setup
	$(VENV)/bin/genloom train pipeline=text hydra.run.dir=$(DEMO_DIR)/text
	$(VENV)/bin/genloom sample checkpoint=$(DEMO_DIR)/text n=3 max_new_tokens=300 \
		'prompt="The "' hydra.run.dir=$(DEMO_DIR)/text/sample
	@echo "text checkpoint: $(DEMO_DIR)/text/checkpoints   samples: $(DEMO_DIR)/text/sample/samples"

clean:
	rm -rf outputs multirun .pytest_cache
