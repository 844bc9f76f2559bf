# The commands the README names. Each sets itself up on a fresh clone: `.venv` is created
# when absent and the core, every plugin under plugins/ and the third-party example plugin
# under examples/ are installed in editable mode.
VENV ?= .venv
PY := $(VENV)/bin/python
PLUGINS := $(patsubst %/pyproject.toml,%,$(wildcard plugins/*/pyproject.toml examples/*/pyproject.toml))
DEMO_DIR := outputs/demo/$(shell date +%Y-%m-%d_%H-%M-%S)

.PHONY: setup test demo bench bench-smoke clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS))
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,serve]" $(foreach p,$(PLUGINS),-e "$(p)[test]")
	touch $@

# Two pytest-xdist workers, whole files to each (a module's fixtures are built once, on one
# worker); tests/conftest.py gives each worker one torch thread. Exit status 5 when nothing
# is collected, as without xdist.
test: setup
	$(PY) -m pytest -n 2 --dist loadfile

GENLOOM := $(VENV)/bin/genloom

demo: setup
	$(GENLOOM) train pipeline=text hydra.run.dir=$(DEMO_DIR)/text
	$(GENLOOM) sample checkpoint=$(DEMO_DIR)/text n=3 max_new_tokens=300 \
		'prompt="The "' hydra.run.dir=$(DEMO_DIR)/text/sample
	$(GENLOOM) train pipeline=glyphs hydra.run.dir=$(DEMO_DIR)/image
	$(GENLOOM) sample checkpoint=$(DEMO_DIR)/image n=16 label=7 hydra.run.dir=$(DEMO_DIR)/image/sample
	$(GENLOOM) train pipeline=notes hydra.run.dir=$(DEMO_DIR)/audio
	$(GENLOOM) sample checkpoint=$(DEMO_DIR)/audio n=8 label=12 hydra.run.dir=$(DEMO_DIR)/audio/sample
	@echo
	@echo "text:  checkpoint $(DEMO_DIR)/text/checkpoints, samples $(DEMO_DIR)/text/sample/samples"
	@echo "image: checkpoint $(DEMO_DIR)/image/checkpoints, grid $(DEMO_DIR)/image/sample/samples/grid.png"
	@echo "audio: checkpoint $(DEMO_DIR)/audio/checkpoints, WAVs (C5) and spectrograms.png in $(DEMO_DIR)/audio/sample/samples"
	@echo
	@echo "serve all three (a web page and an OpenAI-compatible API at http://127.0.0.1:8000):"
	@echo "  $(GENLOOM) serve 'models={story: $(DEMO_DIR)/text, digits: $(DEMO_DIR)/image, notes: $(DEMO_DIR)/audio}'"

# Every benchmark in turn (benchmarks/run_all.py lists them), each printing its table, then
# how long each took: several hours on 2 CPU cores, most of it text_train.py's large size
# (docs/benchmarks.md has the tables and the times). bench-smoke runs the same chain at the
# smoke-test sizes (about 7 minutes; the figures mean nothing). The peers the benchmarks
# compare with (transformers) are installed here, never by `make test`.
bench: setup
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/run_all.py

bench-smoke: setup
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/run_all.py --quick

clean:
	rm -rf outputs multirun .pytest_cache
