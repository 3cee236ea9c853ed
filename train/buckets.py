"""Aspect-ratio buckets: a set of training canvases of about the same pixel count, and a batch sampler
that draws every batch from one bucket, so non-square skins train without distortion or heavy crops."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

Size = tuple[int, int]
"""(height, width) in pixels."""


def bucket_sizes(resolution: int, step: int, max_ratio: float) -> list[Size]:
    """For every short side h ≤ resolution (a multiple of `step`), the longest side w with h·w ≤
    resolution², in both orientations, up to aspect ratio `max_ratio`; sorted from tallest to widest."""
    budget = resolution * resolution
    sizes = set()
    for short in range(step, resolution + 1, step):
        long = budget // short // step * step
        if long / short <= max_ratio:
            sizes.update({(short, long), (long, short)})
    return sorted(sizes, key=lambda s: s[1] / s[0])


def nearest_bucket(width: int, height: int, sizes: Sequence[Size]) -> Size:
    """The bucket whose aspect ratio is closest (in log scale) to the image's."""
    ratio = math.log(width / height)
    return min(sizes, key=lambda s: abs(math.log(s[1] / s[0]) - ratio))


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of `batch_size` indices that share a bucket, in an order fixed by (seed, epoch).

    Every rank builds the same global sequence (accelerate then hands every `num_replicas`-th batch to
    each rank); it is cut to a multiple of `num_replicas` so that no rank repeats another's samples.
    Incomplete batches at the end of a bucket are dropped (their samples come first next epoch, as the
    per-bucket shuffle changes).
    """

    def __init__(self, buckets: Sequence[Size], batch_size: int, seed: int, num_replicas: int = 1) -> None:
        self.batch_size = batch_size
        self.seed = seed
        self.num_replicas = num_replicas
        self.epoch = 0
        groups: dict[Size, list[int]] = defaultdict(list)
        for index, bucket in enumerate(buckets):
            groups[tuple(bucket)].append(index)
        self.groups = [np.asarray(groups[key]) for key in sorted(groups)]

    def never_drawn(self) -> int:
        """Records in buckets smaller than one batch: no epoch ever draws them."""
        return sum(len(g) for g in self.groups if len(g) < self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        batches = sum(len(g) // self.batch_size for g in self.groups)
        return batches - batches % self.num_replicas

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = []
        for group in self.groups:
            shuffled = rng.permutation(group)
            whole = len(shuffled) // self.batch_size * self.batch_size
            batches.extend(shuffled[:whole].reshape(-1, self.batch_size).tolist())
        order = rng.permutation(len(batches))[: len(self)]
        return iter([batches[i] for i in order])
