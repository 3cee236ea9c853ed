"""Dataset records, builders and validation for fill50k-format ControlNet datasets."""

from common.quiet_warnings import silence_known_warnings

silence_known_warnings()
