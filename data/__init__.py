"""Dataset records, builders and validation for fill50k-format ControlNet datasets."""
