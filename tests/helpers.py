"""Helpers shared by several test files."""

from __future__ import annotations

import numpy as np
import torch


def randomize_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BN statistics and affine parameters (so that a forward depends on every buffer
    and BN folding has something to get wrong); returns the model in eval mode."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def small_net(name: str, **kwargs) -> torch.nn.Module:
    """A 4-class, 1-channel zoo net with non-trivial BN (``randomize_bn``), in eval mode: the analyses'
    test subject (eval-mode BN that is not the identity)."""
    from resnets import create_model

    return randomize_bn(create_model(name, num_classes=4, in_chans=1, **kwargs))


def random_batches(n: int = 2, size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` batches of ``size`` random 12 x 12 one-channel images with labels of 4 classes."""
    return [(torch.randn(size, 1, 12, 12), torch.randint(0, 4, (size,))) for _ in range(n)]


def image_errors_at(
    rate_pct: float, seed: int, base: np.ndarray | None = None, images: int = 10_000
) -> np.ndarray:
    """Per-image 0/1 errors at ``rate_pct``, sharing most mistakes with ``base`` (nets err on the hard
    images), as a net scored on every test image would give them."""
    rng = np.random.default_rng(seed)
    wanted = round(rate_pct * images / 100)
    if base is None:
        out = np.zeros(images, dtype=np.uint8)
        out[rng.choice(images, wanted, replace=False)] = 1
        return out
    out = base.copy()
    wrong, right = np.flatnonzero(out), np.flatnonzero(out == 0)
    if wanted > len(wrong):
        out[rng.choice(right, wanted - len(wrong), replace=False)] = 1
    else:
        out[rng.choice(wrong, len(wrong) - wanted, replace=False)] = 0
    return out


def assert_same_weights(a: dict, b: dict) -> None:
    """Two checkpoints hold bit-identical weights (exact resume)."""
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
