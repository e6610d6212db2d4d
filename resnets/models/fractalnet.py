"""FractalNet (Larsson, Maire and Shakhnarovich, "FractalNet: Ultra-Deep Neural Networks without
Residuals", ICLR 2017).

A fractal block of C columns expands f_1(z) = conv(z), f_{C+1}(z) = [f_C o f_C](z) (+) conv(z) (their Eq. 1
and Fig. 1): column c (0-based) holds 2^c conv units, and wherever several columns end a segment at the
same depth a join averages them (element-wise mean, their Sec. 2; consecutive joins are one join of all
the columns that end there). No signal passes untransformed: every path goes through convs. B blocks
are separated by 2x2 max pools; on CIFAR, B = 5 with 64, 128, 256, 512, 512 maps (their Sec. 4 and the
authors' generator, gustavla/fractalnet generation/fractalnet.py). A conv unit is conv3x3, dropout, BN,
ReLU (the authors' Caffe definition).

Drop-path (their Sec. 3.1) regularises training: "local" drop-path drops each input of a join with
probability ``local_drop_rate`` (0.15 in the paper), keeping at least one; "global" drop-path keeps a
single column for the whole network. Each mini-batch is global with probability ``global_drop_rate``
(0.5 in the paper), else local. ``eval_column="deepest"`` evaluates the deepest column alone (their Table
1, "deepest column alone"); the default "all" evaluates the whole fractal. ``drop_rate`` gives block b the
dropout b * drop_rate (their 0%, 10%, 20%, 30%, 40% with 0.1).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .classifier import Classifier, check_rate, is_meta
from .layers import check_choice
from .registry import build_model, register_family, register_model

EVAL_COLUMNS = ("all", "deepest")


@torch.fx.wrap
def sample_global_column(columns: int, global_rate: float, training: bool, deepest: bool) -> int:
    """The column that global drop-path keeps for this mini-batch, or -1 (local drop-path / all columns).
    A traced model keeps this as one call, so it samples at run time."""
    if training:
        return random.randrange(columns) if global_rate and random.random() < global_rate else -1
    return columns - 1 if deepest else -1


@torch.fx.wrap
def fractal_join(
    inputs: list[torch.Tensor], columns: list[int], global_column: int, local_rate: float, training: bool
) -> torch.Tensor:
    """The mean of the ``inputs`` (from ``columns``), after drop-path.

    Global drop-path (``global_column`` >= 0): the chosen column's input if it is among them (a join
    off its path feeds only columns whose outputs it never uses). Local (training only): each input is
    dropped with probability ``local_rate``, one kept at random if all were.
    """
    if global_column >= 0 and global_column in columns:
        return inputs[columns.index(global_column)]
    if training and local_rate and global_column < 0:
        kept = [x for x in inputs if random.random() >= local_rate] or [random.choice(inputs)]
        inputs = kept
    return inputs[0] if len(inputs) == 1 else torch.stack(inputs).mean(0)


class ConvUnit(nn.Sequential):
    """conv3x3 - dropout - BN - ReLU (the authors' Caffe unit)."""

    def __init__(self, in_chans: int, out_chans: int, drop_rate: float) -> None:
        super().__init__(
            nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=False),
            nn.Dropout(drop_rate) if drop_rate else nn.Identity(),
            nn.BatchNorm2d(out_chans),
            nn.ReLU(),
        )


class FractalBlock(nn.Module):
    """C columns; ``columns[c]`` is a ModuleList of 2^c units (``column{c}.{i}``)."""

    def __init__(
        self, columns: int, in_chans: int, out_chans: int, drop_rate: float, local_rate: float
    ) -> None:
        super().__init__()
        self.num_columns, self.depth, self.local_rate = columns, 2 ** (columns - 1), local_rate
        for c in range(columns):
            units = 2**c
            self.add_module(
                f"column{c}",
                nn.ModuleList(
                    [ConvUnit(in_chans if i == 0 else out_chans, out_chans, drop_rate) for i in range(units)]
                ),
            )

    def column(self, c: int) -> nn.ModuleList:
        return getattr(self, f"column{c}")

    def forward(self, x: torch.Tensor, global_column: int = -1) -> torch.Tensor:
        outs = [x] * self.num_columns  # each column's current map
        done = [0] * self.num_columns  # units each column has run
        for step in range(self.depth):
            # Column c has a unit ending at this depth when (step + 1) is a multiple of 2^(C-1-c).
            active = [c for c in range(self.num_columns) if (step + 1) % (self.depth >> c) == 0]
            results = []
            for c in active:
                results.append(self.column(c)[done[c]](outs[c]))
                done[c] += 1
            joined = (
                results[0]
                if len(active) == 1
                else fractal_join(results, active, global_column, self.local_rate, self.training)
            )
            for c in active:
                outs[c] = joined
        return outs[0]


@register_family
class FractalNet(Classifier):
    """B fractal blocks of C columns with 2x2 max pools after each; the last pool's map (1x1 on 32x32
    images) is averaged globally (a no-op there, and any input size works) and classified by ``fc``."""

    family = "FractalNet"

    def __init__(
        self,
        *,
        columns: int,
        widths: Sequence[int],
        num_classes: int = 10,
        in_chans: int = 3,
        local_drop_rate: float = 0.0,
        global_drop_rate: float = 0.0,
        drop_rate: float = 0.0,
        eval_column: str = "all",
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        global_pool: str = "avg",
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            in_chans=in_chans,
            features_only=features_only,
            out_indices=out_indices,
            global_pool=global_pool,
        )
        if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
            raise ConfigError(f"columns must be a positive integer, got {columns!r}")
        check_choice("eval_column", eval_column, EVAL_COLUMNS)
        self.local_drop_rate = check_rate("local_drop_rate", local_drop_rate)
        self.global_drop_rate = check_rate("global_drop_rate", global_drop_rate)
        drop_rate = check_rate("drop_rate", drop_rate)
        if drop_rate * (len(widths) - 1) >= 1:
            raise ConfigError(f"drop_rate {drop_rate} gives the last block dropout >= 1")
        self.columns, self.eval_column = columns, eval_column
        self.stem = nn.Identity()  # the first block reads the image itself
        chans, info = in_chans, [{"module": "stem", "num_chs": in_chans, "reduction": 1}]
        for b, width in enumerate(widths):
            block = FractalBlock(columns, chans, width, b * drop_rate, self.local_drop_rate)
            self.add_module(f"block{b + 1}", block)
            # ceil_mode: the same maps as the paper's pools on 32x32 images, and 28x28 ones (Fashion-MNIST)
            # still reach 1x1 after five pools instead of 0x0.
            self.add_module(f"pool{b + 1}", nn.MaxPool2d(2, 2, ceil_mode=True))
            chans = width
            info.append({"module": f"pool{b + 1}", "num_chs": width, "reduction": 2 ** (b + 1)})
        self.fc = nn.Linear(chans, num_classes) if num_classes else nn.Identity()
        stages = [
            (f"layer{b + 1}", [self.block(b), getattr(self, f"pool{b + 1}")]) for b in range(len(widths))
        ]
        self.set_layout(
            stem=[self.stem],
            stages=stages,
            feature_info=info,
            num_features=chans,
            classifier="fc",
            first_conv="block1.column0.0.0",
            input_size=32,
            imagenet=False,
        )
        self._init_weights()

    def block(self, b: int) -> FractalBlock:
        return getattr(self, f"block{b + 1}")

    def _init_weights(self) -> None:
        # Xavier initialisation, as the authors' Caffe definition (weight_filler "xavier").
        if is_meta(self):
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        column = sample_global_column(
            self.columns, self.global_drop_rate, self.training, self.eval_column == "deepest"
        )
        outputs = []
        for b in range(len(self.stage_names)):
            x = getattr(self, f"pool{b + 1}")(self.block(b)(x, column))
            outputs.append(x)
        return outputs

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.forward_stem(x)
        return [x, *self._stage_outputs(x)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._stage_outputs(self.forward_stem(x))[-1]


def fractal_depth(columns: int, blocks: int) -> int:
    """Convolutional layers on the deepest path: B 2^(C-1) (their Sec. 2)."""
    return blocks * 2 ** (columns - 1)


@register_model
def fractalnet20(**kwargs: Any) -> FractalNet:
    """C = 3 columns, B = 5 blocks: 20 conv layers on the deepest path (their Table 1's CIFAR net)."""
    return build_model(FractalNet, kwargs, columns=3, widths=(64, 128, 256, 512, 512))


@register_model
def fractalnet40(**kwargs: Any) -> FractalNet:
    """C = 4, B = 5: 40 conv layers on the deepest path (their Table 1's 40-layer row), the same widths."""
    return build_model(FractalNet, kwargs, columns=4, widths=(64, 128, 256, 512, 512))


@register_model
def fractalnet_cifar(*, columns: int = 3, blocks: int = 5, width: int = 64, **kwargs: Any) -> FractalNet:
    """C columns and B blocks whose widths double from ``width`` up to 8x (64, 128, 256, 512, 512 for
    the paper's B = 5)."""
    if isinstance(blocks, bool) or not isinstance(blocks, int) or not 1 <= blocks <= 5:
        raise ConfigError(f"blocks must be an integer from 1 to 5 (each halves the map), got {blocks!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ConfigError(f"width must be a positive integer, got {width!r}")
    widths = tuple(width * min(2**b, 8) for b in range(blocks))
    return build_model(
        FractalNet, kwargs, builder_options=("columns", "blocks", "width"), columns=columns, widths=widths
    )
