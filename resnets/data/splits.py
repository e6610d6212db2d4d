"""Seeded, stratified splits: held-out validation sets, quick subsets, folder train/test splits.

Stratified means each class keeps its share (largest-remainder rounding), so a 5,000-image
validation split of CIFAR-10 holds 500 per class (the paper's 45k/5k split, Sec. 4.2).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError


def seed_for(*values: int) -> int:
    """A well-mixed 63-bit seed from integers (seed, epoch, rank, stream ...)."""
    state = np.random.SeedSequence([int(v) % (1 << 64) for v in values]).generate_state(1, np.uint64)
    return int(state[0]) >> 1


def class_quotas(counts: torch.Tensor, n: int) -> torch.Tensor:
    """How many of each class a stratified sample of ``n`` takes (sums to n, never above a count)."""
    total = int(counts.sum())
    exact = counts.double() * n / total
    quota = exact.floor().long()
    remainder = n - int(quota.sum())
    if remainder:  # largest fractional parts first; ties to the lower class index
        order = torch.argsort(-(exact - quota), stable=True)
        quota[order[:remainder]] += 1
    return torch.minimum(quota, counts)


def stratified_split(
    labels: torch.Tensor, n_holdout: int, seed: int, what: str = "split", min_kept: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept indices, held-out indices), both sorted; the held-out part has ``n_holdout`` items in
    the class proportions of ``labels``, chosen at random under ``seed``. ``min_kept``: each class
    keeps at least that many (its share of the held-out part shrinks)."""
    labels = labels.cpu()
    n = len(labels)
    if not 0 <= n_holdout < n:
        raise ConfigError(
            f"a {what} of {n_holdout} images is impossible with {n} images; use 0 <= {what} < {n}"
        )
    counts = torch.bincount(labels)
    quota = class_quotas(counts, n_holdout)
    if min_kept:
        quota = torch.minimum(quota, (counts - min_kept).clamp_min(0))
    generator = torch.Generator().manual_seed(seed)
    order = torch.argsort(labels, stable=True)  # indices grouped by class
    starts = torch.cumsum(counts, 0) - counts
    held = []
    for c in torch.nonzero(quota).flatten().tolist():  # a loop over classes, not samples
        members = order[starts[c] : starts[c] + counts[c]]
        held.append(members[torch.randperm(len(members), generator=generator)[: quota[c]]])
    mask = torch.zeros(n, dtype=torch.bool)
    if held:
        mask[torch.cat(held)] = True
    return torch.nonzero(~mask).flatten(), torch.nonzero(mask).flatten()


def stratified_subset(labels: torch.Tensor, n: int, seed: int, what: str = "subset") -> torch.Tensor:
    """Sorted indices of a seeded, stratified sample of ``n`` items (all of them if n >= len)."""
    if n >= len(labels):
        return torch.arange(len(labels))
    if n <= 0:
        raise ConfigError(f"{what} must be a positive number of images, got {n}")
    return stratified_split(labels, n, seed, what)[1]


def shard_indices(
    n: int, *, shuffle: bool, drop_last: bool, seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """The sample indices rank ``rank`` visits this epoch.

    The order comes from (seed, epoch) only, so every rank agrees on it and a run resumed at an
    epoch boundary repeats it. ``drop_last`` (training) gives every rank the same count by
    dropping the tail; otherwise (evaluation) the shards are disjoint, cover every sample and are
    never padded with duplicates (a padded sampler would bias the metric).
    """
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed_for(seed, epoch)))
    else:
        order = torch.arange(n)
    stop = (n // world_size) * world_size if drop_last else n
    return order[rank:stop:world_size]


def repeated_shard_indices(
    n: int, *, repeats: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """Repeated augmentation (Hoffer et al. 2020; timm's ``--aug-repeats``, torchvision's RASampler):
    the epoch's shuffled order with each sample ``repeats`` times in a row, dealt round-robin to
    the ranks, so that the copies of a sample go to different processes (to the same one only when
    ``world_size < repeats``) and each gets its own augmentation. Every rank keeps ``n //
    world_size`` indices: an epoch has as many steps as without repeats and visits about
    ``n / repeats`` distinct samples."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed_for(seed, epoch)))
    repeated = order.repeat_interleave(repeats)
    return repeated[rank::world_size][: n // world_size]


def shard_size(n: int, *, drop_last: bool, rank: int = 0, world_size: int = 1) -> int:
    """``len(shard_indices(...))`` without building it."""
    if drop_last:
        return n // world_size
    return len(range(rank, n, world_size))
