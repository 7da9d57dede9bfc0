# Fresh machine: `make demo` or `make test` create .venv and install detzoo into it.
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: venv demo lint test test-quick clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m detzoo.demo

# ruff (its settings in pyproject.toml; ruff comes with the test extra)
lint: venv
	$(VENV)/bin/ruff check detzoo tests benchmarks devtools

# the linter, the suite (one pytest-xdist worker per core), then the package as pip installs it
# (sdist + wheel, a fresh venv, used from a temp folder)
test: lint
	$(PY) -m pytest -q -n auto
	tests/wheel_smoke.sh $(PY)

# while developing: the linter, then the suite without the slow, parity and distributed tiers (tests/conftest.py)
test-quick: lint
	$(PY) -m pytest -q -n auto -m "not slow and not parity and not distributed"

clean:
	rm -rf $(VENV) demo_out work_dirs
