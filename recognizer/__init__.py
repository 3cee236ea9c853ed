"""OCR backends and a differentiable text recognizer for the text loss."""
