"""The in-memory pipeline: batched crop/flip, normalisation, stratified splits, epoch order,
resumption and distributed shards."""

from __future__ import annotations

import json

import pytest
import torch

from resnets.data import ArrayDataset, Normalization
from resnets.data.augment import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    crop_flip,
    pad_images,
    pca_lighting_shift,
    random_crop_flip,
)
from resnets.data.loaders import TensorLoader
from resnets.data.splits import shard_indices, stratified_split, stratified_subset
from resnets.errors import DataError


def random_images(n=8, c=3, h=10, w=12, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=generator)


def shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` moved by (dy, dx) with zeros coming in: out[i, j] = image[i - dy, j - dx]."""
    out = torch.zeros_like(image)
    h, w = image.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


# ---------------------------------------------------------------- crop and flip


def test_padded_crop_equals_a_shifted_copy_and_flip_mirrors_it():
    images, p = random_images(), 3
    padded = pad_images(images, p)
    top = torch.tensor([0, 3, 6, 1, 5, 2, 6, 0])
    left = torch.tensor([6, 3, 0, 2, 4, 6, 6, 0])
    idx = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    crops = crop_flip(padded, idx, (10, 12), top, left, torch.zeros(8, dtype=torch.bool))
    flips = crop_flip(padded, idx, (10, 12), top, left, torch.ones(8, dtype=torch.bool))
    for i in range(8):
        expected = shifted(images[i], p - int(top[i]), p - int(left[i]))
        assert torch.equal(crops[i], expected)
        assert torch.equal(flips[i], expected.flip(-1))
    assert torch.equal(crops[1], images[1])  # the centre crop is the image itself


def test_crop_gathers_the_requested_images_in_order():
    images = random_images(n=6)
    zero = torch.full((3,), 2)
    out = crop_flip(
        pad_images(images, 2), torch.tensor([5, 0, 5]), (10, 12), zero, zero, torch.zeros(3, dtype=torch.bool)
    )
    assert torch.equal(out, images[[5, 0, 5]])


def test_random_crop_flip_is_seeded_and_varied():
    images = random_images(n=64)
    padded, idx = pad_images(images, 4), torch.arange(64)

    def run(seed):
        return random_crop_flip(padded, idx, 4, True, torch.Generator().manual_seed(seed))

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
    out = run(1)
    unchanged = [torch.equal(out[i], images[i]) for i in range(64)]
    mirrored = [torch.equal(out[i], images[i].flip(-1)) for i in range(64)]
    assert not all(unchanged) and not all(mirrored)


def test_flip_only_gives_the_image_or_its_mirror_both_seen():
    images = random_images(n=64)
    out = random_crop_flip(images, torch.arange(64), 0, True, torch.Generator().manual_seed(0))
    same = [torch.equal(out[i], images[i]) for i in range(64)]
    mirror = [torch.equal(out[i], images[i].flip(-1)) for i in range(64)]
    assert all(a or b for a, b in zip(same, mirror, strict=True))
    assert 10 < sum(mirror) < 54
    none = random_crop_flip(images, torch.arange(64), 0, False, torch.Generator().manual_seed(0))
    assert torch.equal(none, images)


def test_smaller_random_crops_are_windows_of_the_image_at_every_offset():
    images = random_images(n=400)  # 10 x 12
    out = random_crop_flip(images, torch.arange(400), 0, False, torch.Generator().manual_seed(3), crop_size=8)
    assert out.shape[-2:] == (8, 8)
    offsets = set()
    for i in range(400):
        found = [
            (t, l)
            for t in range(3)
            for l in range(5)
            if torch.equal(out[i], images[i, :, t : t + 8, l : l + 8])
        ]
        assert found, f"crop {i} is no 8x8 window of its image"
        offsets.add(found[0])
    assert offsets == {(t, l) for t in range(3) for l in range(5)}  # every position drawn, none outside


def test_a_full_size_crop_draws_as_the_pad_and_crop_always_did():
    padded, idx = pad_images(random_images(n=64), 2), torch.arange(64)
    before = random_crop_flip(padded, idx, 2, True, torch.Generator().manual_seed(5))
    same = random_crop_flip(padded, idx, 2, True, torch.Generator().manual_seed(5), crop_size=None)
    assert torch.equal(before, same)


def test_pca_lighting_moves_colours_along_the_imagenet_eigenvectors():
    shift = pca_lighting_shift(4000, torch.Generator().manual_seed(0), torch.device("cpu"))
    eigvec, eigval = torch.tensor(IMAGENET_EIGVEC), torch.tensor(IMAGENET_EIGVAL)
    alpha = (shift @ eigvec) / eigval  # eigvec is orthonormal: recover the random coefficients
    assert alpha.std(0).tolist() == pytest.approx([0.1, 0.1, 0.1], rel=0.08)
    assert alpha.mean(0).abs().max() < 0.01
    again = pca_lighting_shift(4000, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert torch.equal(shift, again)


# ---------------------------------------------------------------- normalisation


def test_per_channel_normalization_standardises_the_training_split():
    images = random_images(n=50, c=3, h=8, w=8)
    images[:, 1] //= 4  # give the channels different statistics
    norm = Normalization.fit(images, "per_channel")
    x = norm(images)
    assert x.dtype == torch.float32 and x.shape == images.shape
    assert x.mean((0, 2, 3)).abs().max() < 1e-5
    assert x.std((0, 2, 3), unbiased=False).tolist() == pytest.approx([1.0] * 3, abs=1e-5)
    assert norm.mean[1].item() == pytest.approx(images[:, 1].double().mean().item() / 255, rel=1e-6)


def test_per_pixel_normalization_subtracts_the_mean_image_only():
    images = random_images(n=40, c=1, h=6, w=6)
    norm = Normalization.fit(images, "per_pixel")
    assert norm.mean.shape == (1, 6, 6) and torch.equal(norm.std, torch.ones(1, 1, 1))
    x = norm(images)
    assert x.mean(0).abs().max() < 1e-5  # every pixel centred
    expected = images.double() / 255 - images.double().mean(0) / 255
    assert torch.allclose(x.double(), expected, atol=1e-5)


def test_normalization_round_trips_through_plain_dicts():
    images = random_images(n=20, c=3, h=4, w=4)
    for mode in ("per_channel", "per_pixel"):
        norm = Normalization.fit(images, mode)
        record = json.loads(json.dumps(norm.to_dict()))
        assert torch.equal(Normalization.from_dict(record)(images), norm(images))
    with pytest.raises(DataError, match="do not match the normalization"):
        Normalization.fit(images, "per_pixel")(random_images(c=3, h=5, w=4))
    with pytest.raises(DataError, match="malformed normalization record"):
        Normalization.from_dict({"mode": "per_channel"})
    with pytest.raises(DataError, match="constant"):
        Normalization.fit(torch.zeros(4, 1, 3, 3, dtype=torch.uint8), "per_channel")


def test_lighting_shift_is_added_before_dividing_by_std():
    images = random_images(n=2, c=3, h=4, w=4)
    norm = Normalization.constant((0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    shift = torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.0, -0.1]])
    std = torch.tensor([0.25, 0.5, 1.0])[:, None, None]
    expected = (images.float() / 255 + shift[:, :, None, None] - 0.5) / std
    assert torch.allclose(norm(images, shift), expected, atol=1e-6)


# ---------------------------------------------------------------- splits and shards


def test_stratified_split_is_disjoint_complete_proportional_and_seeded():
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)[torch.randperm(100)]
    keep, held = stratified_split(labels, 20, seed=1)
    assert len(held) == 20 and len(keep) == 80
    assert sorted(torch.cat([keep, held]).tolist()) == list(range(100))
    assert torch.bincount(labels[held]).tolist() == [12, 6, 2]
    assert torch.equal(stratified_split(labels, 20, seed=1)[1], held)
    assert not torch.equal(stratified_split(labels, 20, seed=2)[1], held)
    subset = stratified_subset(labels, 10, seed=0)
    assert torch.bincount(labels[subset], minlength=3).tolist() == [6, 3, 1]


def test_training_shards_are_equal_and_disjoint_eval_shards_cover_everything_once():
    n, world = 103, 4
    train = [
        shard_indices(n, shuffle=True, drop_last=True, seed=0, epoch=2, rank=r, world_size=world)
        for r in range(world)
    ]
    assert {len(s) for s in train} == {n // world}
    flat = torch.cat(train).tolist()
    assert len(set(flat)) == len(flat)
    evals = [
        shard_indices(n, shuffle=False, drop_last=False, seed=0, epoch=0, rank=r, world_size=world)
        for r in range(world)
    ]
    flat = torch.cat(evals).tolist()
    assert sorted(flat) == list(range(n))  # union = all, no duplicates, no padding


# ---------------------------------------------------------------- loaders


def id_dataset(n=50, h=6) -> ArrayDataset:
    """Labels are sample ids, so batches show exactly which samples they hold."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, h, h).contiguous()
    return ArrayDataset(images, torch.arange(n), [str(i) for i in range(n)])


def loader(data, train=True, **kwargs):
    channels = data.images.shape[1]
    norm = Normalization.constant((0.0,) * channels, (1 / 255,) * channels)  # x = pixel value: ids readable
    options = dict(batch_size=8, normalization=norm, train=train, seed=7)
    options.update(kwargs)
    return TensorLoader(data, **options)


def test_training_loader_shuffles_drops_the_last_batch_and_repeats_per_epoch():
    train = loader(id_dataset(), padding=0, hflip=False)
    assert len(train) == 6 and train.num_samples == 50
    epoch0 = [y for _, y in train]
    assert all(len(y) == 8 for y in epoch0) and len(epoch0) == 6
    ids = torch.cat(epoch0)
    assert len(set(ids.tolist())) == 48 and ids.tolist() != sorted(ids.tolist())
    x, y = next(iter(train))
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x[:, 0, 0, 0].round().long(), y)  # images travel with their labels
    assert torch.equal(torch.cat([y for _, y in train]), ids)  # same epoch, same order
    train.set_epoch(1)
    assert not torch.equal(torch.cat([y for _, y in train]), ids)


def test_resuming_at_an_epoch_boundary_reproduces_batches_and_augmentation():
    data = ArrayDataset(random_images(n=40, c=3, h=8, w=8), torch.arange(40) % 4, list("abcd"))
    first, resumed = loader(data, padding=2, hflip=True), loader(data, padding=2, hflip=True)
    first.set_epoch(3)
    resumed.set_epoch(3)
    for (xa, ya), (xb, yb) in zip(first, resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    first.set_epoch(4)
    assert not torch.equal(next(iter(first))[0], next(iter(resumed))[0])


def test_eval_loader_keeps_order_and_every_sample_and_shards_without_duplicates():
    data = id_dataset(n=45)
    full = loader(data, train=False)
    assert len(full) == 6 and full.num_samples == 45
    assert torch.cat([y for _, y in full]).tolist() == list(range(45))
    shards = [loader(data, train=False, rank=r, world_size=4) for r in range(4)]
    seen = torch.cat([y for s in shards for _, y in s]).tolist()
    assert sorted(seen) == list(range(45))
    assert sum(s.num_samples for s in shards) == 45


def test_training_shards_per_rank_are_equal_and_disjoint():
    data = id_dataset(n=50)
    shards = [loader(data, rank=r, world_size=3, batch_size=4, padding=0) for r in range(3)]
    assert {len(s) for s in shards} == {4} and {s.num_samples for s in shards} == {16}
    seen = torch.cat([y for s in shards for _, y in s]).tolist()
    assert len(seen) == len(set(seen)) == 48


def test_training_crops_are_smaller_and_evaluation_sees_the_whole_image():
    data = ArrayDataset(
        torch.randint(0, 255, (32, 1, 6, 6), dtype=torch.uint8), torch.arange(32), list("x" * 32)
    )
    x, y = next(iter(loader(data, padding=0, hflip=False, crop_size=4)))
    assert x.shape[-2:] == (4, 4)
    for image, label in zip(x, y, strict=True):
        source = data.images[label].float()
        assert any(torch.equal(image, source[:, t : t + 4, l : l + 4]) for t in range(3) for l in range(3))
    whole, _ = next(iter(loader(data, train=False, crop_size=4)))
    assert whole.shape[-2:] == (6, 6)
    native, ids = next(iter(loader(data, padding=0, hflip=False, crop_size=6)))  # the native side: no crop
    assert torch.equal(native, data.images[ids].float())


def test_channels_last_batches():
    data = ArrayDataset(random_images(n=16, c=3, h=8, w=8), torch.zeros(16, dtype=torch.int64), ["a"])
    x, _ = next(iter(loader(data, padding=2, hflip=True, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last)
    x, _ = next(iter(loader(data, train=False, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_array_dataset_rejects_bad_labels_and_shapes():
    with pytest.raises(DataError, match="labels out of range: found -1"):
        ArrayDataset(random_images(n=2), torch.tensor([0, -1]), ["a", "b"], "mine")
    with pytest.raises(DataError, match="3 images but labels of shape"):
        ArrayDataset(random_images(n=3), torch.tensor([0, 1]), ["a", "b"])
    with pytest.raises(DataError, match="must be uint8 N x C x H x W"):
        ArrayDataset(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]), ["a", "b"])
