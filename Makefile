# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo skins-demo tiny-base test test-fast lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,serve,ray]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/demo.sh

# Generated keyboard skins through every builder: skins -> compose -> canny -> glyph (OCR) -> caption
# (tiny random BLIP, so captions are noise). Final dataset: $(SKINS_DEMO)/captioned/train.jsonl.
SKINS_DEMO ?= datasets/skins_demo
SKINS_N    ?= 8
skins-demo: $(STAMP)
	$(PY) -m data skins --out $(SKINS_DEMO)/parts --n $(SKINS_N) --seed 0
	$(PY) -m data compose --in $(SKINS_DEMO)/parts --out $(SKINS_DEMO)/composed
	$(PY) -m data canny --in $(SKINS_DEMO)/composed --out $(SKINS_DEMO)/canny
	$(PY) -m data glyph --in $(SKINS_DEMO)/canny --out $(SKINS_DEMO)/glyph
	$(PY) -m data.tiny_blip models/tiny-blip
	$(PY) -m data caption --in $(SKINS_DEMO)/glyph --out $(SKINS_DEMO)/captioned --model models/tiny-blip
	$(PY) -m data validate $(SKINS_DEMO)/captioned/train.jsonl --open-images
	$(PY) -m data stats $(SKINS_DEMO)/captioned/train.jsonl

# Retrain the shipped base (assets/tiny-sdxl-trained) from its recipe: ~15-20 min on 2 CPU cores.
tiny-base: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m train.tiny_base assets/tiny-sdxl-trained --overwrite --work-dir build/tiny-base

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) bench/bench_train_step.py

clean:
	rm -rf runs/fill_demo datasets/fill_demo datasets/fill_demo_val reports/fill_demo $(SKINS_DEMO) models/tiny-blip
