"""The peer a user would write today: torchvision's FashionMNIST with per-sample transforms,
a DataLoader with 2 workers, the model in eager mode, plain SGD (the paper's recipe)."""

from __future__ import annotations

import gzip
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

# Fashion-MNIST training-set statistics, as the tutorials that users copy from use them.
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def torchvision_root(source_dir: Path, root: Path) -> Path:
    """Lay the gzipped IDX files out as torchvision's FashionMNIST expects them (raw/, unzipped)."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in RAW_FILES:
        target = raw / name
        if not target.exists():
            gz = source_dir / f"{name}.gz"
            src = gz if gz.exists() else source_dir / name
            opener = gzip.open if src.suffix == ".gz" else open
            with opener(src, "rb") as fin, open(target, "wb") as fout:
                shutil.copyfileobj(fin, fout)
    return root


def peer_datasets(root: Path) -> tuple[datasets.FashionMNIST, datasets.FashionMNIST]:
    train_tf = transforms.Compose(
        [
            transforms.RandomCrop(28, padding=2),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(FASHION_MEAN, FASHION_STD),
        ]
    )
    test_tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(FASHION_MEAN, FASHION_STD)])
    train = datasets.FashionMNIST(str(root), train=True, transform=train_tf, download=False)
    test = datasets.FashionMNIST(str(root), train=False, transform=test_tf, download=False)
    return train, test


def peer_loader(
    dataset, batch_size: int, train: bool, workers: int = 2, device: torch.device | None = None
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=train,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device is not None and device.type == "cuda",
    )


def paper_optimizer(model: nn.Module, lr: float = 0.1) -> torch.optim.SGD:
    """The paper's recipe (Sec. 4.2): SGD, momentum 0.9, weight decay 1e-4."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)


def cycle(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


def train_steps(model: nn.Module, batches: Iterator, optimizer: torch.optim.Optimizer, steps: int) -> float:
    """Run ``steps`` training steps (data loading included) on the model's device; images per second."""
    model.train()
    device = next(model.parameters()).device
    images = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        images += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return images / (time.perf_counter() - t0)


@torch.no_grad()
def test_accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        correct += (model(x).argmax(1) == y).sum().item()
        total += y.numel()
    return correct / total
