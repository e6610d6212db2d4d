"""The modern augmentations and losses, each checked for what it must do: timm's ``--aa`` specs,
per-sample seeded policies, random erasing's box, mixup's and CutMix's targets, repeated
augmentation's shards, BCE against timm's, LAMB against timm's, clipping, the soft-target error."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from resnets.data import DataConfig, build_data
from resnets.data.folders import ShardSampler
from resnets.data.mixing import MixupCutmix
from resnets.data.policies import RandAugmentTimm, auto_augment, per_sample, random_erasing
from resnets.data.splits import repeated_shard_indices
from resnets.errors import ConfigError
from resnets.train.lamb import Lamb
from resnets.train.loop import clip_gradients
from resnets.train.losses import binary_cross_entropy, cross_entropy, error_count

pytestmark = pytest.mark.usefixtures("one_thread")


def images(n=8, c=1, size=12, seed=0):
    return torch.randint(
        0, 256, (n, c, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


# --- --aa: timm's names ---------------------------------------------------------------------------


def test_timm_policy_names_resolve_to_torchvision_transforms():
    rand = auto_augment("rand-m7-n3-mstd0.5-inc1")
    assert isinstance(rand, RandAugmentTimm)
    assert (rand.magnitude, rand.num_ops, rand.magnitude_std, rand.op_prob) == (7, 3, 0.5, 0.5)
    assert auto_augment("rand-m9-mstd0.5").num_ops == 2  # timm's default n
    assert isinstance(auto_augment("trivialaugment"), v2.TrivialAugmentWide)
    assert isinstance(auto_augment("ta_wide"), v2.TrivialAugmentWide)
    for name, policy in (("v0", "IMAGENET"), ("original", "IMAGENET"), ("cifar10", "CIFAR10")):
        transform = auto_augment(name)
        assert isinstance(transform, v2.AutoAugment) and transform.policy.name == policy
    assert auto_augment(None) is None and auto_augment("none") is None


@pytest.mark.parametrize(
    "spec, says",
    [
        ("rand-m11", "0-10"),
        ("rand-m9-inc0", "inc1"),
        ("rand-m9-x3", "unknown RandAugment option"),
        ("randaug", "RandAugment spec"),
        ("autoaug", "unknown auto_augment"),
    ],
)
def test_bad_policy_specs_are_one_clear_error(spec, says):
    with pytest.raises(ConfigError, match=says):
        auto_augment(spec)
    with pytest.raises(ConfigError, match=says):  # before any data loads
        DataConfig(auto_augment=spec)


def test_rand_augment_draws_timms_magnitudes():
    """Levels N(m, std) clipped to [0, 10], in torchvision's 101 bins; each op applied with p 0.5."""
    seen = []

    class Recorder:  # stands in for the wrapped v2.RandAugment: records the magnitude bin it is given
        magnitude = None

        def __call__(self, image):
            seen.append(self.magnitude)
            return image

    policy = RandAugmentTimm(magnitude=9, num_ops=2, magnitude_std=3.0)
    policy._op = Recorder()
    torch.manual_seed(0)
    for _ in range(500):
        policy(images(1)[0])
    assert 0.4 < len(seen) / 1000 < 0.6  # half of the 2 x 500 ops run
    assert min(seen) >= 0 and max(seen) == 100  # clipped at level 10
    assert abs(sum(seen) / len(seen) - 82.4) < 3.5  # E[min(N(9, 3), 10)] = 8.24 levels
    exact = RandAugmentTimm(magnitude=7, magnitude_std=0.0, op_prob=1.0)
    exact._op, seen[:] = Recorder(), []
    exact(images(1)[0])
    assert seen == [70, 70]


@pytest.mark.parametrize("spec", ["rand-m9-mstd0.5", "trivialaugment", "v0"])
def test_a_seeded_policy_is_reproducible_and_differs_per_image(spec):
    policy, batch = auto_augment(spec), images(16, c=3, size=16).repeat(1, 1, 1, 1)
    same = images(1, c=3, size=16).expand(16, -1, -1, -1).contiguous()
    before = torch.random.get_rng_state()
    a, b = per_sample(policy, batch, seed=5), per_sample(policy, batch, seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's stream did not move
    assert torch.equal(a, b) and a.dtype == torch.uint8
    assert not torch.equal(a, per_sample(policy, batch, seed=6))
    out = per_sample(policy, same, seed=5)
    assert len({bytes(x.flatten().tolist()) for x in out}) > 4  # one image, many augmentations


# --- random erasing -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pixel", "const"])
def test_random_erasing_changes_only_its_box(mode):
    x = torch.randn(64, 3, 20, 20) + 5  # no pixel is 0, so a zero fill shows everywhere
    out = per_sample(random_erasing(1.0, mode), x, seed=0)
    for before, after in zip(x, out, strict=True):
        changed = (before != after).any(0)
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        if not len(rows):
            continue  # v2 gives up after 10 draws that do not fit
        box = torch.zeros_like(changed)
        box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
        assert torch.equal(changed, box)  # a filled rectangle, nothing outside it
        assert 0.02 * 400 * 0.8 <= box.sum() <= 0.33 * 400 * 1.2  # timm's / torchvision's area range
        if mode == "const":
            assert (after[:, box] == 0).all()
    assert torch.equal(
        per_sample(random_erasing(0.5, mode), x, seed=3), per_sample(random_erasing(0.5, mode), x, seed=3)
    )


def test_the_loader_erases_a_box_of_the_normalised_batch():
    common = dict(dataset="fashion-mnist", train_subset=256, test_subset=64, batch_size=32, crop_padding=2)
    plain, erased = (build_data(DataConfig(**common, reprob=p), "cpu") for p in (0.0, 1.0))
    (x0, y0), (x1, y1) = next(iter(plain.train)), next(iter(erased.train))
    assert torch.equal(y0, y1)  # same order and crops: erasing has its own random stream
    differs = (x0 != x1).any(1)
    assert differs.any(2).any(1).float().mean() > 0.9
    assert not differs.all()


# --- mixup and CutMix -----------------------------------------------------------------------------


def test_mixup_targets_sum_to_one_and_equal_the_mixing_weight():
    x, y = torch.randn(16, 1, 8, 8), torch.arange(16) % 10
    mixed, target = MixupCutmix(10, mixup_alpha=0.4)(x, y, seed=1)
    assert target.shape == (16, 10) and torch.allclose(target.sum(1), torch.ones(16))
    lam = float(target[0, y[0]])  # y[0] != y[-1]: the weight of the image's own label
    assert 0 < lam < 1 and torch.allclose(mixed, lam * x + (1 - lam) * x.roll(1, 0), atol=1e-6)
    partner = y.roll(1, 0)
    assert torch.allclose(target[torch.arange(16), partner], torch.full((16,), 1 - lam))


def test_cutmix_label_weight_equals_the_pasted_area():
    x, y = torch.randn(16, 1, 12, 12), torch.arange(16) % 10
    for seed in range(5):
        mixed, target = MixupCutmix(10, cutmix_alpha=1.0)(x, y, seed=seed)
        pasted = (mixed != x).any(1)  # pixels that came from the partner (random values: no ties)
        assert torch.equal(mixed[pasted[:, None]], x.roll(1, 0)[pasted[:, None]])
        area = pasted.flatten(1).float().mean(1)
        assert torch.allclose(target[torch.arange(16), y.roll(1, 0)], area, atol=1e-6)
        assert torch.allclose(target.sum(1), torch.ones(16))


def test_mixup_prob_and_switch_choose_as_timm():
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8)
    untouched, target = MixupCutmix(10, mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.0)(x, y, seed=0)
    assert torch.equal(untouched, x) and torch.equal(target, F.one_hot(y, 10).float())
    both = MixupCutmix(10, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=1.0)
    boxes = [(both(x, y, seed=s)[0] == x).any() for s in range(10)]  # CutMix leaves pixels untouched
    assert all(boxes)
    never = MixupCutmix(10, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.0)
    assert not any((never(x, y, seed=s)[0] == x).any() for s in range(10))
    half = MixupCutmix(10, mixup_alpha=1.0, prob=0.5)
    mixed = sum(not torch.equal(half(x, y, seed=s)[0], x) for s in range(200))
    assert 70 < mixed < 130
    assert torch.equal(half(x, y, seed=3)[1], half(x, y, seed=3)[1])


# --- repeated augmentation ------------------------------------------------------------------------


def test_repeated_augmentation_sends_copies_to_different_processes():
    n, k, world = 60, 3, 3
    shards = [
        repeated_shard_indices(n, repeats=k, seed=0, epoch=2, rank=r, world_size=world) for r in range(world)
    ]
    assert all(len(s) == n // world for s in shards)  # an epoch keeps its number of steps
    for sample in torch.cat(shards).unique():
        holders = [r for r, s in enumerate(shards) if sample in s]
        assert len(holders) == k  # each copy on its own process
    assert len(torch.cat(shards).unique()) == n // k
    single = repeated_shard_indices(n, repeats=k, seed=0, epoch=2)
    assert torch.equal(single.view(-1, k), single.view(-1, k)[:, :1].expand(-1, k))  # copies in a row
    assert not torch.equal(single, repeated_shard_indices(n, repeats=k, seed=0, epoch=3))


def test_each_copy_gets_its_own_augmentation():
    cfg = DataConfig(
        dataset="fashion-mnist",
        train_subset=256,
        test_subset=64,
        batch_size=30,
        aug_repeats=3,
        crop_padding=0,
        hflip=False,
        auto_augment="rand-m9-n3-mstd0.5",
    )
    x, _ = next(iter(build_data(cfg, "cpu").train))
    copies = x.view(10, 3, -1)
    assert sum(not torch.equal(c[0], c[1]) or not torch.equal(c[1], c[2]) for c in copies) >= 8
    sampler = ShardSampler(40, shuffle=True, drop_last=True, seed=0, rank=0, world_size=1, repeats=4)
    items = list(sampler)
    assert len(items) == len(sampler) == 40
    assert all(items[i][0] == items[i + 1][0] for i in range(0, 40, 4))
    assert len({seed for _, seed in items}) == 40  # the image-folder workers get a seed per copy


# --- losses and the training error ----------------------------------------------------------------


@pytest.mark.parametrize("smoothing, threshold", [(0.0, None), (0.1, None), (0.1, 0.2)])
def test_bce_equals_timms(smoothing, threshold):
    from timm.data.mixup import mixup_target
    from timm.loss import BinaryCrossEntropy

    logits, y = torch.randn(12, 10), torch.arange(12) % 10
    reference = BinaryCrossEntropy(smoothing=smoothing, target_threshold=threshold)
    ours = binary_cross_entropy(smoothing, threshold)
    assert torch.allclose(ours(logits, y), reference(logits, y), atol=1e-6)
    lam = 0.7  # mixed targets: timm smooths them in its Mixup, we in the loss
    soft = lam * F.one_hot(y, 10).float() + (1 - lam) * F.one_hot(y.flip(0), 10).float()
    timm_target = mixup_target(y, 10, lam, smoothing)
    timm_loss = BinaryCrossEntropy(target_threshold=threshold)(logits, timm_target)
    assert torch.allclose(ours(logits, soft), timm_loss, atol=1e-6)


def test_cross_entropy_of_one_hot_targets_equals_that_of_labels():
    logits, y = torch.randn(12, 10), torch.arange(12) % 10
    loss = cross_entropy(0.1)
    assert torch.allclose(loss(logits, F.one_hot(y, 10).float()), loss(logits, y), atol=1e-6)


def test_the_training_error_of_soft_targets_counts_the_missing_weight():
    logits = torch.eye(4)[[0, 1, 2, 3]] * 5  # predictions 0, 1, 2, 3
    labels = torch.tensor([0, 1, 3, 3])
    assert int(error_count(logits, labels)) == 1
    soft = torch.tensor([[0.7, 0.3, 0, 0], [0.2, 0.8, 0, 0], [0, 0, 0.4, 0.6], [0, 0, 0, 1.0]])
    assert float(error_count(logits, soft)) == pytest.approx(0.3 + 0.2 + 0.6 + 0.0)


# --- LAMB and clipping ----------------------------------------------------------------------------


def test_lamb_steps_as_timms_lamb():
    from timm.optim import Lamb as TimmLamb

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))
    twin = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))
    twin.load_state_dict(model.state_dict())

    def groups(m):  # decayed weights, undecayed norm parameters and biases, as the recipes build them
        decay = [p for n, p in m.named_parameters() if n.endswith("weight") and p.dim() > 1]
        rest = [p for p in m.parameters() if all(p is not q for q in decay)]
        return [{"params": decay, "weight_decay": 0.02}, {"params": rest, "weight_decay": 0.0}]

    ours, theirs = Lamb(groups(model), lr=5e-3), TimmLamb(groups(twin), lr=5e-3)
    start = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(16, 6) * 30, torch.randint(0, 3, (16,))  # large inputs: the global norm clip acts
    for _ in range(6):
        for m, opt in ((model, ours), (twin, theirs)):
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert all(not torch.allclose(a, b) for a, b in zip(model.parameters(), start, strict=True))  # all moved


@pytest.mark.parametrize("mode", ["norm", "value"])
def test_clipping_bounds_the_gradient(mode):
    model = torch.nn.Linear(10, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    (model(torch.randn(4, 10) * 100).pow(2).sum()).backward()
    grads = [p.grad for p in model.parameters()]
    before = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    assert before > 10
    clip_gradients(model, opt, torch.amp.GradScaler("cpu", enabled=False), 0.5, mode)
    if mode == "norm":
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
        assert after == pytest.approx(0.5, rel=1e-4)
    else:
        assert max(float(p.grad.abs().max()) for p in model.parameters()) == pytest.approx(0.5)
    unclipped = [p.grad.clone() for p in model.parameters()]
    clip_gradients(model, opt, torch.amp.GradScaler("cpu", enabled=False), None, mode)
    assert all(torch.equal(a, p.grad) for a, p in zip(unclipped, model.parameters(), strict=True))
