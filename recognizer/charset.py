"""The class list of a PP-OCR CTC recognizer: text <-> class ids."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["BLANK", "Charset", "EncodedText"]

BLANK = 0
"""CTC blank class index."""


@dataclass(frozen=True)
class EncodedText:
    ids: tuple[int, ...]
    unknown: tuple[str, ...]
    """Characters of the text that the recognizer has no class for (not in ``ids``)."""


class Charset:
    """Classes in PP-OCR order: blank, the model's characters, then space (appended by PP-OCR's decoder)."""

    def __init__(self, characters: Sequence[str]) -> None:
        self.characters = list(characters)
        self.classes = ["<blank>", *self.characters, " "]
        self._index = {char: i for i, char in enumerate(self.classes) if i != BLANK}

    def __len__(self) -> int:
        return len(self.classes)

    def encode(self, text: str) -> EncodedText:
        """Class ids of ``text``; characters without a class are reported, never silently dropped."""
        ids, unknown = [], []
        for char in text:
            index = self._index.get(char)
            if index is None:
                unknown.append(char)
            else:
                ids.append(index)
        return EncodedText(tuple(ids), tuple(unknown))

    def decode(self, logits: torch.Tensor) -> list[str]:
        """Greedy CTC decode of ``(N, T, classes)`` logits: argmax, collapse repeats, drop blanks."""
        texts = []
        for row in logits.argmax(dim=-1).tolist():
            chars, previous = [], BLANK
            for index in row:
                if index != previous and index != BLANK:
                    chars.append(self.classes[index])
                previous = index
            texts.append("".join(chars))
        return texts
