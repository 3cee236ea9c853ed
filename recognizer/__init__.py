"""OCR backends and a differentiable text recognizer for the text loss.

* ``ocr`` — the ``OcrBackend`` interface and ``OcrConfig``; ``backends.load_ocr`` builds the backend
  in ``rapidocr_backend`` (default, offline), ``paddle_backend`` (optional extra) or
  ``tesseract_reader`` (Tesseract 5, an independent second reader); shipped model files are located by
  ``shipped_models``.
* ``torch_rec`` — the frozen torch PP-OCR recognizer (``rec_net`` is the network, ``onnx_import``
  reads its weights from the ONNX, ``rec_cache`` caches them, ``charset`` maps text to classes).
* ``crops`` — differentiable line crops from 4-point boxes; ``text_loss`` — CTC and feature losses.
* ``synthetic`` — keyboard-like images with known label boxes, for tests and benchmarks.

Submodules are imported explicitly (``from recognizer.backends import load_ocr``) so that importing one
part never loads torch, onnxruntime or paddle for another.
"""
