"""CIFAR ResNets: "Deep Residual Learning" Sec. 4.2 (6n+2), Identity Mappings (9n+2, block and shortcut
ablations) and Wide ResNets (depth 6n+4, width k).

A 3x3 conv with 16 filters, three stages on 32x32 / 16x16 / 8x8 maps (layer1..layer3), global average
pool, fc. The original nets use option A shortcuts, so a ResNet has exactly the parameters of its
plain counterpart (paper Sec. 4.2).

``share_weights=True`` is the ResNet "in recurrent form" of Liao and Poggio 2016 ("Bridging the Gaps
Between Residual Learning, Recurrent Neural Networks and Visual Cortex", arXiv:1604.03640): a ResNet whose
units share weights is a shallow recurrent net unrolled in time, one unit per time step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ..errors import ConfigError
from .base import ResNetBase
from .blocks import BLOCK_PLACEMENTS, BlockConfig, PreActBasicBlock
from .layers import SHORTCUT_KINDS, SHORTCUT_OPTIONS, check_choice
from .norms import is_norm
from .registry import build_model, register_family, register_model
from .stems import StemConfig


@register_family
class CifarResNet(ResNetBase):
    """A CIFAR-style ResNet; builders fix ``layers``, ``widths``, ``block_type`` and ``residual``.

    ``unit`` places BN and ReLU as in Identity Mappings Fig. 4 (the option keeps the paper's word,
    "Residual Unit"); ``shortcut_kind`` is its Fig. 2. ``widths`` are the basic blocks' widths, or the
    bottleneck widths (outputs 4x) for ``block_type="bottleneck"``.

    ``share_weights``: within each stage, every unit after the first uses the weights of the second
    (its convolutions, and a gated shortcut's gate): the stage is one recurrent unit applied n - 1 times
    after the first unit, which alone changes the width or the stride. The normalisation layers are not
    shared: each unit (time step) keeps its own BN scales, shifts and running statistics, the
    "time-specific batch normalization" that Liao and Poggio 2016 proposed (so do Cooijmans et al. 2016,
    "Recurrent Batch Normalization"; Liao, Kawaguchi and Poggio 2016, "Streaming Normalization", Sec. 1,
    credits both): a step's activations have statistics of their own, which one shared BN would average.
    A shared weight appears once in ``parameters()`` and in ``state_dict()`` (under the second unit's name,
    ``layer1.1.conv1.weight``); ``load_state_dict`` fills the other units' names from it.
    """

    family = "CIFAR"

    def __init__(
        self,
        layers: Sequence[int],
        *,
        num_classes: int = 10,
        in_chans: int = 3,
        block_type: str = "basic",
        widths: Sequence[int] = (16, 32, 64),
        shortcut: str = "A",
        unit: str = "original",
        shortcut_kind: str = "identity",
        gate_bias: float = -6.0,
        drop_rate: float = 0.0,
        zero_init_last: bool = False,
        residual: bool = True,
        drop_path_rate: float = 0.0,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        global_pool: str = "avg",
        share_weights: bool = False,
    ) -> None:
        check_choice("block_type", block_type, ("basic", "bottleneck"))
        check_choice("share_weights", share_weights, (False, True))
        if share_weights and min(layers) < 3:
            raise ConfigError(
                "share_weights=True gives the units after each stage's first one set of "
                "weights, so it needs at least 3 units per stage (6n+2 depth 20, 9n+2 depth "
                f"29) for two to share it; this net has {min(layers)}"
            )
        check_choice("shortcut", shortcut, SHORTCUT_OPTIONS)
        check_choice("unit", unit, tuple(BLOCK_PLACEMENTS))
        check_choice("shortcut_kind", shortcut_kind, SHORTCUT_KINDS)
        check_choice("zero_init_last", zero_init_last, (False, True))
        block = BLOCK_PLACEMENTS[unit].get(block_type)
        if block is None:  # Identity Mappings Table 2 studies the other placements on basic blocks only
            raise ConfigError(
                f"unit={unit!r} exists for basic blocks only; bottleneck blocks are "
                "'original' or 'full_preact'"
            )
        if isinstance(drop_rate, bool) or not isinstance(drop_rate, int | float) or not 0 <= drop_rate < 1:
            raise ConfigError(f"drop_rate must be a number in [0, 1), got {drop_rate!r}")
        if drop_rate and block is not PreActBasicBlock:
            raise ConfigError("drop_rate (WRN dropout) is implemented for pre-activation basic blocks only")
        if isinstance(gate_bias, bool) or not isinstance(gate_bias, int | float):
            raise ConfigError(f"gate_bias must be a number, got {gate_bias!r}")
        if gate_bias != -6.0 and not shortcut_kind.endswith("gating"):
            raise ConfigError(
                "gate_bias sets the initial bias of a gated shortcut: use it with "
                "shortcut_kind='exclusive_gating' or 'shortcut_only_gating'"
            )
        # Bottlenecks stride on their first 1x1 conv, as the Identity Mappings authors' code does.
        cfg = BlockConfig(
            shortcut=shortcut,
            residual=residual,
            shortcut_kind=shortcut_kind,
            gate_bias=float(gate_bias),
            drop_rate=float(drop_rate),
            stride_in_1x1=block_type == "bottleneck",
        )
        super().__init__(
            block,
            layers,
            widths,
            cfg,
            num_classes=num_classes,
            in_chans=in_chans,
            stem=StemConfig(imagenet=False, width=16),
            zero_init_last=zero_init_last,
            drop_path_rate=drop_path_rate,
            features_only=features_only,
            out_indices=out_indices,
            global_pool=global_pool,
        )
        self.share_weights = share_weights
        # alias state-dict key -> the key it shares its tensor with (empty without share_weights)
        self.shared_keys = share_stage_weights(self) if share_weights else {}
        if share_weights:
            self.register_state_dict_post_hook(_drop_shared_keys)
            self.register_load_state_dict_pre_hook(_fill_shared_keys)


def share_stage_weights(model: ResNetBase) -> dict[str, str]:
    """Make units 3..n of each stage reuse the weighted layers of its unit 2 (``layerK.1``), all but the
    norms; returns the state-dict key of every shared tensor at each reusing unit -> the owner's key.

    The sharing is by module: ``layer1.2.conv1`` *is* ``layer1.1.conv1``, so a forward through the
    stage runs the one conv n - 1 times and its gradient sums over the steps (backpropagation through
    time). Each unit's BNs, drop-path rate and any parameter-free parts stay its own.
    """
    shared: dict[str, str] = {}
    for stage_name in model.stage_names:
        stage = getattr(model, stage_name)
        owner = stage[1]
        weighted = [
            (path, module)
            for path, module in owner.named_modules()
            if path and not is_norm(module) and any(True for _ in module.parameters(recurse=False))
        ]
        for index in range(2, len(stage)):
            for path, module in weighted:
                parent_path, _, child = path.rpartition(".")
                parent = stage[index].get_submodule(parent_path) if parent_path else stage[index]
                setattr(parent, child, module)
                for param, _ in module.named_parameters(recurse=False):
                    shared[f"{stage_name}.{index}.{path}.{param}"] = f"{stage_name}.1.{path}.{param}"
    return shared


def _drop_shared_keys(module: nn.Module, state_dict: dict, prefix: str, _local_metadata: object) -> None:
    """``state_dict`` post-hook: each shared tensor once (safetensors refuses tensors that share memory)."""
    for alias in module.shared_keys:
        state_dict.pop(prefix + alias, None)


def _fill_shared_keys(module: nn.Module, state_dict: dict, prefix: str, *_args: object) -> None:
    """``load_state_dict`` pre-hook: the reusing units' keys from the owner's (a saved state dict has each
    shared tensor once)."""
    for alias, owner in module.shared_keys.items():
        if prefix + alias not in state_dict and prefix + owner in state_dict:
            state_dict[prefix + alias] = state_dict[prefix + owner]


def blocks_per_stage(depth: object, block_type: str = "basic") -> int:
    """n for a depth of 6n+2 (basic blocks, 2 layers each) or 9n+2 (bottlenecks, 3 layers each)."""
    per_stage = 6 if block_type == "basic" else 9
    valid = isinstance(depth, int) and not isinstance(depth, bool) and depth >= per_stage + 2
    if not valid or (depth - 2) % per_stage:
        examples = "20, 32, 44, 56, 110, 1202" if block_type == "basic" else "164, 1001"
        raise ConfigError(
            f"invalid depth {depth!r} for a CIFAR ResNet of {block_type} blocks: the depth "
            f"must be {per_stage}n+2 with n >= 1 (e.g. {examples})"
        )
    return (depth - 2) // per_stage


def wrn_blocks_per_stage(depth: object) -> int:
    """WRN-d-k: d = 6n+4 (two 3x3 convs per block, the first conv, the fc and the projections of WRN)."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise ConfigError(f"invalid WRN depth {depth!r}: it must be 6n+4 with n >= 1 (e.g. 16, 22, 28, 40)")
    return (depth - 4) // 6


def _cifar(
    kwargs: dict[str, Any],
    n: int,
    builder_options: tuple[str, ...],
    refused: dict[str, str] | None = None,
    **fixed: Any,
) -> CifarResNet:
    # The architecture is the builder's: block type, widths and (for plain nets) no shortcuts.
    fixed = {"block_type": "basic", "widths": (16, 32, 64), "residual": True, **fixed}
    return build_model(
        CifarResNet, kwargs, builder_options=builder_options, refused=refused, layers=(n, n, n), **fixed
    )


def _resnet(
    kwargs: dict[str, Any], depth: int, builder_options: tuple[str, ...] = (), block_type: str = "basic"
) -> CifarResNet:
    # The original nets: drop_rate belongs to WRN blocks, so it is not an option here. The bottleneck nets
    # (Identity Mappings Fig. 1 / Table 3, "original") project where the shape changes, as the
    # pre-activation bottleneck nets do, so that the two differ only in the unit.
    if block_type == "bottleneck":
        kwargs = {"shortcut": "B", **kwargs}
    return _cifar(
        kwargs, blocks_per_stage(depth, block_type), builder_options, block_type=block_type, drop_rate=0.0
    )


def _plain(kwargs: dict[str, Any], depth: int, builder_options: tuple[str, ...] = ()) -> CifarResNet:
    # Without shortcuts, nothing about them (nor zero_init_last, which would zero the output) is an option.
    fixed = {
        "shortcut": "A",
        "unit": "original",
        "shortcut_kind": "identity",
        "gate_bias": -6.0,
        "zero_init_last": False,
    }
    refused = {"drop_path_rate": "stochastic depth drops residual branches; plain nets have none"}
    return _cifar(
        kwargs,
        blocks_per_stage(depth),
        builder_options,
        refused=refused,
        residual=False,
        drop_rate=0.0,
        **fixed,
    )


def _preact(
    kwargs: dict[str, Any], depth: int, block_type: str, builder_options: tuple[str, ...] = ()
) -> CifarResNet:
    # Identity Mappings nets: basic blocks use option A like the original ResNet-110; the bottleneck nets
    # (16/64/128/256 channels) project where the shape changes, as the authors' code does.
    kwargs = {"shortcut": "A" if block_type == "basic" else "B", **kwargs}
    n = blocks_per_stage(depth, block_type)
    return _cifar(kwargs, n, builder_options, block_type=block_type, unit="full_preact")


def _wrn(kwargs: dict[str, Any], depth: int, k: object, builder_options: tuple[str, ...] = ()) -> CifarResNet:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"widen_factor must be a positive integer, got {k!r}")
    # WRN blocks are full pre-activation basic blocks with 1x1 projections where the shape changes.
    kwargs = {"shortcut": "B", **kwargs}
    return _cifar(
        kwargs,
        wrn_blocks_per_stage(depth),
        builder_options,
        widths=(16 * k, 32 * k, 64 * k),
        unit="full_preact",
        shortcut_kind="identity",
        gate_bias=-6.0,
    )


# --- "Deep Residual Learning" Table 6 ----------------------------------------------------------------
@register_model
def resnet20(**kwargs: Any) -> CifarResNet:
    return _resnet(kwargs, 20)


@register_model
def resnet32(**kwargs: Any) -> CifarResNet:
    return _resnet(kwargs, 32)


@register_model
def resnet44(**kwargs: Any) -> CifarResNet:
    return _resnet(kwargs, 44)


@register_model
def resnet56(**kwargs: Any) -> CifarResNet:
    return _resnet(kwargs, 56)


@register_model
def resnet110(**kwargs: Any) -> CifarResNet:
    return _resnet(kwargs, 110)


@register_model
def resnet1202(**kwargs: Any) -> CifarResNet:
    return _resnet(kwargs, 1202)


@register_model
def plain20(**kwargs: Any) -> CifarResNet:
    return _plain(kwargs, 20)


@register_model
def plain32(**kwargs: Any) -> CifarResNet:
    return _plain(kwargs, 32)


@register_model
def plain44(**kwargs: Any) -> CifarResNet:
    return _plain(kwargs, 44)


@register_model
def plain56(**kwargs: Any) -> CifarResNet:
    return _plain(kwargs, 56)


@register_model
def plain110(**kwargs: Any) -> CifarResNet:
    return _plain(kwargs, 110)


@register_model
def plain1202(**kwargs: Any) -> CifarResNet:
    return _plain(kwargs, 1202)


# --- "Identity Mappings" pre-activation nets ----------------------------------------------------------
@register_model
def preact_resnet110(**kwargs: Any) -> CifarResNet:
    return _preact(kwargs, 110, "basic")


@register_model
def preact_resnet164(**kwargs: Any) -> CifarResNet:
    return _preact(kwargs, 164, "bottleneck")


@register_model
def preact_resnet1001(**kwargs: Any) -> CifarResNet:
    return _preact(kwargs, 1001, "bottleneck")


# --- Wide ResNets (Zagoruyko & Komodakis 2016), WRN-depth-k ----------------------------------------
@register_model
def wrn16_8(**kwargs: Any) -> CifarResNet:
    return _wrn(kwargs, 16, 8)


@register_model
def wrn22_8(**kwargs: Any) -> CifarResNet:
    return _wrn(kwargs, 22, 8)


@register_model
def wrn28_10(**kwargs: Any) -> CifarResNet:
    return _wrn(kwargs, 28, 10)


@register_model
def wrn40_4(**kwargs: Any) -> CifarResNet:
    return _wrn(kwargs, 40, 4)


# --- any depth: create_model("resnet_cifar", depth=38) ---------------------------------------------
@register_model
def resnet_cifar(*, depth: int = 20, bottleneck: bool = False, **kwargs: Any) -> CifarResNet:
    """A CIFAR ResNet of any valid depth (options as resnet20): 6n+2 basic blocks, or 9n+2 bottlenecks with
    ``bottleneck=True`` (Identity Mappings' original ResNet-164 and -1001)."""
    return _resnet(kwargs, depth, ("depth", "bottleneck"), "bottleneck" if bottleneck else "basic")


@register_model
def plain_cifar(*, depth: int = 20, **kwargs: Any) -> CifarResNet:
    return _plain(kwargs, depth, ("depth",))


@register_model
def preact_resnet_cifar(*, depth: int = 164, bottleneck: bool = True, **kwargs: Any) -> CifarResNet:
    """A pre-activation CIFAR ResNet: 9n+2 bottleneck (default) or 6n+2 basic (``bottleneck=False``)."""
    return _preact(kwargs, depth, "bottleneck" if bottleneck else "basic", ("depth", "bottleneck"))


@register_model
def wrn(*, depth: int = 28, widen_factor: int = 10, **kwargs: Any) -> CifarResNet:
    """WRN-depth-widen_factor (depth 6n+4)."""
    return _wrn(kwargs, depth, widen_factor, ("depth", "widen_factor"))
