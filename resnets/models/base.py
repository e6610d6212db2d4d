"""The network skeleton every ResNet here shares.

conv1-bn1-relu stem (7x7/2 or a deep stem + 3x3/2 max pool for ImageNet, 3x3 for CIFAR), stages
``layer1..layerN``, a final BN-ReLU in pre-activation nets, global average pooling and ``fc`` (the only
head layer). The interfaces of torchvision (torch.fx tracing, ``create_feature_extractor``) and timm
(``features_only``, ``feature_info``, ``reset_classifier(0)``, ``forward_head(pre_logits=True)``,
``pretrained_cfg``) live here too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from .blocks import BlockConfig, ResidualBlock, make_stage
from .features import FeatureInfo, check_out_indices
from .interop import is_timm_v2_state_dict, pretrained_cfg, timm_v2_state_dict
from .layers import check_choice
from .norms import is_norm
from .stems import StemConfig, make_stem_conv

GLOBAL_POOLS = ("avg", "")  # timm's names: average pooling, or none (the head then sees the feature map)


def check_positive_int(option: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{option} must be a positive integer, got {value!r}")
    return value


def check_num_classes(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(
            f"num_classes must be a non-negative integer (0: no classifier, the model returns "
            f"its pooled features), got {value!r}"
        )
    return value


def check_drop_path_rate(value: object, residual: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ConfigError(f"drop_path_rate must be a number in [0, 1), got {value!r}")
    if value and not residual:
        raise ConfigError("drop_path_rate (stochastic depth) drops residual branches: plain nets have none")
    return float(value)


def drop_path_rates(rate: float, num_blocks: int) -> list[float]:
    """Drop probability of each block, in forward order: Huang et al. 2016 Eq. 4 gives block l of L the
    survival probability p_l = 1 - (l / L)(1 - p_L), so the drop probability grows linearly to ``rate``."""
    return [rate * (index + 1) / num_blocks for index in range(num_blocks)]


@torch.fx.wrap
def check_input_channels(x: torch.Tensor, in_chans: int, model_name: str) -> torch.Tensor:
    """``x`` itself after checking it is (batch, in_chans, h, w). torch.fx keeps this as one call (it would
    otherwise refuse the shape test), so traced models check their input too."""
    if x.ndim != 4 or x.shape[1] != in_chans:
        raise ConfigError(
            f"{model_name} expects input of shape (batch, {in_chans}, height, width), got "
            f"{tuple(x.shape)}; create the model with in_chans={x.shape[1] if x.ndim == 4 else '?'} "
            "or convert the images"
        )
    return x


def check_conv_input(conv: nn.Conv2d, args: tuple[torch.Tensor]) -> None:
    """Forward pre-hook of a net's first conv: the input must be (batch, conv.in_channels, h, w).

    A hook, not a call in ``forward``, so that traced graphs have torchvision's nodes; the traced module
    keeps it (it is the same conv), and so does a scripted one. A conv that replaces the first one (the
    usual torchvision surgery for grey images) brings its own channel count and no hook.
    """
    x = args[0]
    if x.dim() != 4 or x.shape[1] != conv.in_channels:
        got = str(x.shape[1]) if x.dim() == 4 else "?"
        raise ConfigError(
            f"the model expects input of shape (batch, {conv.in_channels}, height, width), got "
            f"{list(x.shape)}; create the model with in_chans={got} or convert the images"
        )


def take_indices(num_maps: int, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
    """timm's ``feature_take_indices``: None takes every map, an int the last n, a sequence those indices
    (negative ones count from the end); also the largest index taken."""
    if indices is None:
        indices = num_maps
    if isinstance(indices, int):
        if not 0 < indices <= num_maps:
            raise ConfigError(f"last-n ({indices}) is out of range (1 to {num_maps})")
        taken = list(range(num_maps - indices, num_maps))
    else:
        taken = [i + num_maps if i < 0 else i for i in indices]
        if any(not 0 <= i < num_maps for i in taken):
            raise ConfigError(f"feature indices {list(indices)} out of range (0 to {num_maps - 1})")
    return taken, max(taken)


class ResNetBase(nn.Module):
    """Stem, stages, pooling and classifier; see the module docstring.

    ``dilate[i]`` replaces the stride of stage i + 2 by a dilation (torchvision's
    replace_stride_with_dilation). ``features_only`` (timm): no head, ``forward`` returns the feature maps
    ``out_indices`` selects (0: stem, k: stage k) and the stages after the last one are not built.

    Module names are torchvision's (``conv1 bn1 relu maxpool layer1..N avgpool fc``, and ``inplanes``), so
    FX node names and code that edits the tree (``model.avgpool = nn.AdaptiveMaxPool2d(1)``) work as
    there; ``TimmResNet`` (imagenet.py) names the stem's activation and the pool as timm does (``act1``,
    ``global_pool``). Assigning the other library's name raises instead of adding a module that forward
    would never call.
    """

    stem_act_name, pool_name = "relu", "avgpool"
    foreign_names = {"act1": "relu", "global_pool": "avgpool"}  # the other library's name -> ours
    __jit_unused_properties__ = ["default_cfg"]

    def __init__(
        self,
        block: type[ResidualBlock],
        layers: Sequence[int],
        widths: Sequence[int],
        cfg: BlockConfig,
        *,
        num_classes: int,
        in_chans: int,
        stem: StemConfig,
        zero_init_last: bool,
        drop_path_rate: float = 0.0,
        dilate: Sequence[bool] = (),
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        self.in_chans = check_positive_int("in_chans", in_chans)
        check_choice("features_only", features_only, (False, True))
        check_choice("global_pool", global_pool, GLOBAL_POOLS)
        if zero_init_last and not cfg.residual:
            raise ConfigError("zero_init_last needs residual blocks: a plain net would output zeros")
        drop_path_rate = check_drop_path_rate(drop_path_rate, cfg.residual)
        stem.check()
        if not stem.norm_act and not block.pre_activation:
            raise ConfigError(
                "stem_norm=False (conv1 without BN-ReLU) is the ResNet v2 layout: it needs "
                "pre-activation blocks, which open with their own BN-ReLU"
            )
        self.out_indices = check_out_indices(out_indices, len(layers) + 1, features_only)
        self.features_only = features_only
        num_stages = max(self.out_indices) if features_only else len(layers)  # features_only: cut after it

        self.conv1 = make_stem_conv(stem, in_chans, cfg.norm, cfg.act)
        first_conv = self.conv1 if isinstance(self.conv1, nn.Conv2d) else self.conv1[0]
        first_conv.register_forward_pre_hook(check_conv_input)
        self.bn1 = cfg.norm(stem.out_chans) if stem.norm_act else None
        setattr(self, self.stem_act_name, cfg.act())
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem.imagenet else nn.Identity()
        chans = stem.out_chans  # entering the next stage
        # Feature map 0 is the stem's output before its max pool (stride 2), as in timm.
        info = [
            {
                "module": self.stem_act_name if stem.norm_act else "conv1",
                "num_chs": chans,
                "reduction": 2 if stem.imagenet else 1,
            }
        ]
        reduction = 4 if stem.imagenet else 1  # after the max pool
        self.stage_names: list[str] = []
        rates = drop_path_rates(drop_path_rate, sum(layers))
        dilate = tuple(dilate) or (False,) * (len(layers) - 1)
        dilation = 1
        for i, (num_blocks, width) in enumerate(zip(layers[:num_stages], widths, strict=False)):
            stride, previous_dilation = (1 if i == 0 else 2), dilation
            if i > 0 and dilate[i - 1]:
                dilation, stride = dilation * stride, 1
            reduction *= stride
            stage = make_stage(
                block,
                chans,
                width,
                num_blocks,
                stride,
                cfg,
                first_of_net=i == 0 and stem.norm_act,
                dilation=dilation,
                previous_dilation=previous_dilation,
                drop_path=rates[:num_blocks],
            )
            rates = rates[num_blocks:]
            chans = width * block.expansion
            name = f"layer{i + 1}"
            self.add_module(name, stage)
            self.stage_names.append(name)
            info.append({"module": name, "num_chs": chans, "reduction": reduction})
        self.feature_info = FeatureInfo(info, self.out_indices)
        self.num_features = self.head_hidden_size = chans
        # torchvision's ResNet attributes (its _resnet_fpn_extractor reads inplanes: the last stage's width)
        self.inplanes, self.dilation = chans, dilation
        self.groups, self.base_width = cfg.groups, cfg.base_width
        self.grad_checkpointing = False  # timm's set_grad_checkpointing
        # Pre-activation nets end with BN-ReLU: "for the last Residual Unit ... we adopt an extra
        # activation right after its element-wise addition" (Identity Mappings Sec. 4.1).
        complete = num_stages == len(layers)
        self.final_bn = cfg.norm(chans) if block.pre_activation and complete else None
        setattr(self, self.pool_name, None)
        self.fc: nn.Module | None = None
        if features_only:
            self.num_classes = 0
        else:
            self._make_head(num_classes, global_pool)
        self.default_input_size = (in_chans, 224, 224) if stem.imagenet else (in_chans, 32, 32)
        first_conv = "conv1.0" if stem.stem_type else "conv1"
        self.pretrained_cfg = pretrained_cfg(
            imagenet=stem.imagenet, in_chans=in_chans, num_classes=self.num_classes, first_conv=first_conv
        )
        self.resnets_spec: dict | None = None  # set by the registry: {"name", "kwargs"}
        self._init_weights(zero_init_last)
        self.register_load_state_dict_pre_hook(_rename_timm_v2_keys)

    def _make_head(self, num_classes: int, global_pool: str) -> None:
        if not global_pool and num_classes:
            raise ConfigError(
                "global_pool='' (no pooling) leaves a feature map that a Linear classifier "
                "cannot take: use it with num_classes=0"
            )
        ref = next(iter(self.parameters()), None)
        factory = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
        setattr(self, self.pool_name, nn.AdaptiveAvgPool2d(1) if global_pool else None)
        # timm's convention: num_classes=0 removes the classifier; the model then returns pooled features.
        self.fc = nn.Linear(self.num_features, num_classes, **factory) if num_classes else nn.Identity()

    def _init_weights(self, zero_init_last: bool) -> None:
        # He et al. initialisation ("Delving Deep into Rectifiers"), which the paper cites; fc keeps
        # PyTorch's default, as torchvision does. A model on the meta device has no values to set (summary()
        # and the FX tests build them so), and initialising them there costs as much as building the model.
        if next(self.parameters()).is_meta:
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif is_norm(m) and getattr(m, "weight", None) is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for _, block in self.residual_blocks():
            if block.merge is not None:
                block.merge.init_weights()
            if zero_init_last:
                block.zero_init_last()

    # --- forward pieces -------------------------------------------------------------------------

    def _model_name(self) -> str:
        return self.resnets_spec["name"] if self.resnets_spec else type(self).__name__

    def __setattr__(self, name: str, value: object) -> None:
        if name in self.foreign_names:
            raise AttributeError(
                f"{type(self).__name__} calls this module {self.foreign_names[name]!r} (as "
                f"{'torchvision' if self.pool_name == 'avgpool' else 'timm'} does): "
                f"assign model.{self.foreign_names[name]} instead of model.{name}"
            )
        super().__setattr__(name, value)
        if getattr(self, "resnets_spec", None) is not None:  # surgery after construction: keep the spec true
            self._follow_surgery(name, value)

    def _follow_surgery(self, name: str, value: object) -> None:
        """torchvision's fine-tuning lines (``model.fc = nn.Linear(model.fc.in_features, 10)``,
        ``model.conv1 = nn.Conv2d(1, 64, ...)``) change the classes or channels; the recorded spec (and so
        checkpoints, eval and export) follows them."""
        if name == "fc" and isinstance(value, nn.Linear | nn.Identity):
            self.num_classes = value.out_features if isinstance(value, nn.Linear) else 0
            self.resnets_spec["kwargs"]["num_classes"] = self.pretrained_cfg["num_classes"] = self.num_classes
        elif name == "conv1" and isinstance(value, nn.Conv2d):
            self.in_chans = self.resnets_spec["kwargs"]["in_chans"] = value.in_channels
            self.default_input_size = (value.in_channels, *self.default_input_size[1:])

    def stem_act(self, x: torch.Tensor) -> torch.Tensor:
        """The stem's activation (also the final one of pre-activation nets): ``relu``, timm's ``act1``."""
        return self.relu(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Global pooling, flattened: ``avgpool`` (timm's ``global_pool``); None keeps the map."""
        return x if self.avgpool is None else self.avgpool(x).flatten(1)

    def _stem_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map 0: the stem before its max pool (conv1-bn1-relu; conv1 alone in ResNet v2 nets).
        conv1's pre-hook checks the input (``check_conv_input``)."""
        x = self.conv1(x)
        return x if self.bn1 is None else self.stem_act(self.bn1(x))

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self._stem_features(x))

    def final_act(self, x: torch.Tensor) -> torch.Tensor:
        """The final BN-ReLU of pre-activation nets (identity for the others)."""
        return x if self.final_bn is None else self.stem_act(self.final_bn(x))

    def run_stage(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """One stage; with ``set_grad_checkpointing()`` each block is recomputed in the backward pass."""
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            for block in stage:
                x = checkpoint(block, x, use_reentrant=False)
            return x
        return stage(x)

    def _stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's output, from the stem's max-pooled map."""
        if torch.jit.is_scripting():
            return self._scripted_stage_outputs(x)
        outputs = []
        for name in self.stage_names:
            x = self.run_stage(getattr(self, name), x)
            outputs.append(x)
        return outputs

    def _scripted_stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        # TorchScript has no getattr by a variable name; hasattr is resolved when the model is scripted.
        outputs: list[torch.Tensor] = []
        if hasattr(self, "layer1"):
            x = self.layer1(x)
            outputs.append(x)
        if hasattr(self, "layer2"):
            x = self.layer2(x)
            outputs.append(x)
        if hasattr(self, "layer3"):
            x = self.layer3(x)
            outputs.append(x)
        if hasattr(self, "layer4"):
            x = self.layer4(x)
            outputs.append(x)
        return outputs

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every feature map: the stem's (index 0), then each stage's output, the last including the final
        BN-ReLU of pre-activation nets. Reductions and widths are in ``feature_info``."""
        x = self._stem_features(x)
        maps = [x]
        maps.extend(self._stage_outputs(self.maxpool(x)))
        maps[-1] = self.final_act(maps[-1])
        return maps

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's output (for use as a detection backbone); the last one includes the final BN-ReLU
        of pre-activation nets, so it equals forward_features(x)."""
        return self.feature_maps(x)[1:]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, batch x num_features x h x w."""
        x = self.forward_stem(x)
        if torch.jit.is_scripting():
            return self.final_act(self._scripted_stage_outputs(x)[-1])
        for name in self.stage_names:
            x = self.run_stage(getattr(self, name), x)
        return self.final_act(x)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool, then ``fc``; ``pre_logits=True`` stops before ``fc`` (timm)."""
        if self.fc is None:
            raise ConfigError("this model was built with features_only=True: it has no head")
        x = self.pool(features)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            maps = self.feature_maps(x)
            return [maps[i] for i in self.out_indices]
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's: the feature maps ``indices`` selects (0: the stem before its max pool, k: stage k; an int
        n: the last n; None: all), and unless ``intermediates_only`` the last map computed as well
        (``forward_features(x)`` when every stage runs). ``stop_early`` skips the stages after the last
        map taken; ``norm`` applies pre-activation nets' final BN-ReLU to the last stage's map."""
        if output_fmt != "NCHW":
            raise ConfigError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        taken, last_taken = take_indices(len(self.stage_names) + 1, indices)
        x = self._stem_features(x)
        intermediates = [x] if 0 in taken else []
        x = self.maxpool(x)
        names = self.stage_names[:last_taken] if stop_early else self.stage_names
        for i, name in enumerate(names, start=1):
            x = self.run_stage(getattr(self, name), x)
            if i in taken:
                intermediates.append(self.final_act(x) if norm and i == len(self.stage_names) else x)
        if intermediates_only:
            return intermediates
        return (self.final_act(x) if len(names) == len(self.stage_names) else x), intermediates

    # --- introspection --------------------------------------------------------------------------

    def residual_blocks(self) -> list[tuple[str, ResidualBlock]]:
        """Every block in forward order, with its qualified name (``layer2.0`` ...)."""
        return [
            (f"{name}.{i}", block) for name in self.stage_names for i, block in enumerate(getattr(self, name))
        ]

    def get_classifier(self, name_only: bool = False) -> nn.Module | str | None:
        return "fc" if name_only else self.fc

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's: recompute each block's activations in the backward pass (less memory, more time)."""
        self.grad_checkpointing = enable

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter groups (its layer-wise lr decay reads them): the stem, then one group per block
        (per stage if ``coarse``); the classifier falls in the last group, as in timm. Pre-activation nets'
        ``final_bn`` joins the last block, as timm's ResNet v2 ``norm`` does."""
        blocks = r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)"
        if self.final_bn is None:
            return {"stem": r"^conv1|bn1|maxpool", "blocks": blocks}
        return {"stem": r"^conv1|bn1|maxpool", "blocks": [(blocks, None), (r"^final_bn", (99999,))]}

    @property
    def default_cfg(self) -> dict:
        """timm's older name for ``pretrained_cfg``."""
        return self.pretrained_cfg

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh ``fc`` for ``num_classes`` (fine-tuning); 0 removes it, as in timm, and the model then
        returns its pooled features (``global_pool=''``: the unpooled map). The recorded spec follows."""
        if self.features_only:
            raise ConfigError(f"{self._model_name()} was built with features_only=True: it has no classifier")
        num_classes = check_num_classes(num_classes)
        if global_pool is None:
            global_pool = "avg" if getattr(self, self.pool_name) is not None else ""
        check_choice("global_pool", global_pool, GLOBAL_POOLS)
        training = self.training
        self._make_head(num_classes, global_pool)
        self.fc.train(training)
        self.num_classes = num_classes
        self.pretrained_cfg["num_classes"] = num_classes
        if self.resnets_spec is not None:
            self.resnets_spec["kwargs"]["num_classes"] = num_classes
            if global_pool != "avg" or "global_pool" in self.resnets_spec["kwargs"]:
                self.resnets_spec["kwargs"]["global_pool"] = global_pool


def _rename_timm_v2_keys(module: nn.Module, state_dict: dict, prefix: str, *_args: object) -> None:
    """``load_state_dict`` hook: a timm ``resnetv2_*`` state dict is renamed to our keys before loading."""
    keys = [k for k in state_dict if k.startswith(prefix)]
    if not is_timm_v2_state_dict(keys, prefix):
        return
    ours = {k[len(prefix) :]: state_dict.pop(k) for k in keys}
    renamed = timm_v2_state_dict(ours, set(module.state_dict()))
    state_dict.update({prefix + k: v for k, v in renamed.items()})
