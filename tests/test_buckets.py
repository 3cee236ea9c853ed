"""Aspect-ratio buckets: the bucket set, the nearest bucket, and batches that stay in one bucket and
split across ranks without duplicates."""

from __future__ import annotations

import math

import pytest
from accelerate.data_loader import BatchSamplerShard

from train.buckets import BucketBatchSampler, bucket_sizes, nearest_bucket
from train.sample_geometry import CropGeometry


def test_sdxl_bucket_set_stays_within_the_pixel_budget_and_ratio() -> None:
    sizes = bucket_sizes(1024, 64, 2.0)
    assert (1024, 1024) in sizes and (832, 1216) in sizes and (1216, 832) in sizes
    for height, width in sizes:
        assert height % 64 == 0 and width % 64 == 0
        assert height * width <= 1024 * 1024
        assert height * width > 1024 * 1024 * 0.9, "a bucket wastes more than 10% of the budget"
        assert max(height, width) / min(height, width) <= 2.0
    assert sizes == sorted(sizes, key=lambda s: s[1] / s[0])
    assert {(w, h) for h, w in sizes} == set(sizes), "portrait and landscape buckets mirror each other"


def test_a_phone_screenshot_lands_in_the_tallest_bucket_without_distortion() -> None:
    sizes = bucket_sizes(1024, 64, 2.0)
    bucket = nearest_bucket(1080, 2340, sizes)  # a 19.5:9 phone skin
    assert bucket == (1344, 768)
    geometry = CropGeometry.cover(1080, 2340, bucket)
    (new_h, new_w), (top, left) = geometry.resized_size, geometry.crop_top_left
    assert new_w == 768 and new_h >= 1344 and left == 0
    assert math.isclose(new_h / new_w, 2340 / 1080, rel_tol=0.01), "aspect ratio changed"
    assert geometry.time_ids().tolist() == [2340, 1080, top, 0, 1344, 768]


def _buckets() -> list[tuple[int, int]]:
    return [(48, 80)] * 7 + [(80, 48)] * 6 + [(64, 64)] * 5


def test_batches_come_from_one_bucket_and_change_with_the_epoch() -> None:
    buckets = _buckets()
    sampler = BucketBatchSampler(buckets, batch_size=2, seed=0)
    first = list(sampler)
    assert len(first) == len(sampler) == 3 + 3 + 2
    assert all(len({buckets[i] for i in batch}) == 1 for batch in first)
    assert len({i for batch in first for i in batch}) == 16, "an index was drawn twice"
    assert list(sampler) == first, "same epoch, same order"
    assert sampler.never_drawn() == 0
    assert BucketBatchSampler(buckets, batch_size=6, seed=0).never_drawn() == 5, "the 5 square records"
    sampler.set_epoch(1)
    assert list(sampler) != first


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_get_disjoint_batches_of_equal_count(world: int) -> None:
    buckets = _buckets()
    sampler = BucketBatchSampler(buckets, batch_size=2, seed=0, num_replicas=world)
    shards = [list(BatchSamplerShard(sampler, world, rank)) for rank in range(world)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == len(sampler) // world
    seen = [i for shard in shards for batch in shard for i in batch]
    assert len(seen) == len(set(seen)), "two ranks trained on the same record"
    assert all(len({buckets[i] for i in batch}) == 1 for shard in shards for batch in shard)
