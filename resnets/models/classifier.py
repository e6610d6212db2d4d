"""The model interface for the networks that are not ResNets (VGG, DenseNet, Highway, FractalNet, RoR,
Multi-ResNet, Inception, PolyNet): a stem, stages, a head and timm's / torchvision's accessors.

``ResNetBase`` builds its own layers; these networks keep the layer names of the code they are checked
against (torchvision's ``features.0`` / ``classifier.6``, timm's ``conv2d_1a`` / ``classif``), so a subclass
builds its modules under those names and then describes its layout to ``Classifier.set_layout``: which
registered modules make the stem and each stage, where the classifier is, and the feature maps.
A stage is a ``ModuleChain``: a view of modules registered elsewhere (no parameters of its own, so the
state-dict keys stay the reference's), callable, with ``len()`` and ``parameters()`` as ``summary()``
needs them.

Feature maps are numbered as timm numbers a ResNet's: 0 is the stem's output, 1..N the stages.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .base import check_input_channels, check_num_classes, check_positive_int
from .features import FeatureInfo, check_out_indices
from .interop import pretrained_cfg
from .layers import check_choice


class ModuleChain:
    """Modules registered elsewhere in the model, run one after the other (a stage, or the stem).

    Not an ``nn.Module``: assigning one to a model attribute registers nothing, so the model's state-dict
    keys stay those of the modules' own names. ``len()`` counts the modules (summary's "blocks").
    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = list(modules)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.modules:
            x = module(x)
        return x

    def __len__(self) -> int:
        return len(self.modules)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.modules)

    def __getitem__(self, index: int) -> nn.Module:
        return self.modules[index]

    def parameters(self) -> Iterator[nn.Parameter]:
        for module in self.modules:
            yield from module.parameters()


# torch.fx keeps the channel check as one call in traced models too (it would otherwise refuse the
# shape test); wrap() patches this module's name for it, as base.py does for its own.
torch.fx.wrap("check_input_channels")


def check_rate(option: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ConfigError(f"{option} must be a number in [0, 1), got {value!r}")
    return float(value)


class Classifier(nn.Module):
    """What every survey network shares; see the module docstring.

    Subclasses call ``super().__init__(...)`` first (it checks the common options), build their modules,
    then ``set_layout(...)``. ``features_only=True`` (timm): ``forward`` returns the feature maps
    ``out_indices`` selects and the head is not built; unlike ``ResNetBase`` the stages after the last
    selected map are still built (their names are the reference's).
    """

    # TorchScript compiles properties unless listed here; a family that scripts (VGG, DenseNet) has its
    # reference's forward in ``forward`` under ``torch.jit.is_scripting()``.
    __jit_unused_properties__ = ["fc", "default_cfg", "head_features"]

    family = "survey"
    # The head's pooling: global average ("avg"), or none ("", with num_classes=0: the unpooled map).
    global_pools: tuple[str, ...] = ("avg", "")

    def __init__(
        self,
        *,
        num_classes: int,
        in_chans: int,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        self.in_chans = check_positive_int("in_chans", in_chans)
        check_choice("features_only", features_only, (False, True))
        check_choice("global_pool", global_pool, self.global_pools)
        if not global_pool and num_classes and not features_only:
            raise ConfigError(
                "global_pool='' (no pooling) leaves a feature map that a Linear classifier "
                "cannot take: use it with num_classes=0"
            )
        self.features_only = features_only
        self._requested_out_indices = out_indices
        self._global_pool_name = global_pool
        if features_only:
            self.num_classes = 0
        self.resnets_spec: dict | None = None  # set by the registry: {"name", "kwargs"}

    # --- layout -----------------------------------------------------------------------------------

    def set_layout(
        self,
        *,
        stem: Sequence[nn.Module],
        stages: Sequence[tuple[str, Sequence[nn.Module]]],
        feature_info: Sequence[dict],
        num_features: int,
        classifier: str,
        first_conv: str,
        input_size: int,
        imagenet: bool,
        head: Sequence[str] = (),
    ) -> None:
        """Describe the network: ``stem`` and each named stage (registered modules, in forward order),
        ``feature_info`` (one dict per map: the stem's, then each stage's), the width of the last map,
        the classifier's module path, and ``head``, the paths of the other head modules (deleted with
        ``features_only=True``). ``summary()`` reads the stem as ``conv1`` (a chain; ``bn1`` None)."""
        if len(feature_info) != len(stages) + 1:
            raise AssertionError("feature_info lists the stem's map, then one per stage")
        self.stem_chain = ModuleChain(stem)
        if "conv1" not in self._modules:
            self.conv1 = self.stem_chain  # summary()'s stem row counts conv1 and bn1
        if "bn1" not in self._modules:
            self.bn1 = None
        self.final_bn = None  # summary()'s head row; final_act() is the identity unless overridden
        self.stage_names = []
        for name, modules in stages:
            if name not in self._modules:
                setattr(self, name, ModuleChain(modules))
            self.stage_names.append(name)
        self.out_indices = check_out_indices(
            self._requested_out_indices, len(feature_info), self.features_only
        )
        self.feature_info = FeatureInfo([dict(d) for d in feature_info], self.out_indices)
        self.num_features = num_features
        self.classifier_name = classifier
        self.default_input_size = (self.in_chans, input_size, input_size)
        self.pretrained_cfg = pretrained_cfg(
            imagenet=imagenet, in_chans=self.in_chans, num_classes=self.num_classes, first_conv=first_conv
        )
        self.pretrained_cfg.update(classifier=classifier, input_size=self.default_input_size)
        if input_size != (224 if imagenet else 32):
            self.pretrained_cfg["pool_size"] = None
        self.global_pool = nn.AdaptiveAvgPool2d(1) if self._global_pool_name else None
        if self.features_only:
            for path in (*head, classifier):
                self._set_module(path, None)
            self.global_pool = None
        elif not self.num_classes:
            self._set_module(classifier, nn.Identity())

    def _set_module(self, path: str, module: nn.Module | None) -> None:
        parent_path, _, name = path.rpartition(".")
        parent = self._resolve(parent_path) if parent_path else self
        if parent is None:  # inside a module already removed (features_only)
            return
        if isinstance(parent, nn.Sequential) and name.isdigit() and module is None:
            parent[int(name)] = nn.Identity()  # keeps the later indices (and their keys) in place
        elif module is None:
            # Removed, not set to None: load_state_dict reports a None child's keys as neither missing nor
            # unexpected, and a features_only model must list the head's keys as unexpected.
            parent._modules.pop(name, None)
        else:
            setattr(parent, name, module)

    # --- forward pieces ---------------------------------------------------------------------------

    def _model_name(self) -> str:
        return self.resnets_spec["name"] if self.resnets_spec else type(self).__name__

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map 0, after checking the input's channels (also in a torch.fx-traced copy)."""
        x = check_input_channels(x, self.in_chans, self._model_name())
        return self.stem_chain(x)

    def final_act(self, x: torch.Tensor) -> torch.Tensor:
        """What follows the last stage before pooling (DenseNet's final ReLU); the identity by default."""
        return x

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stem's map, then each stage's output (the last one through ``final_act``)."""
        x = self.forward_stem(x)
        maps = [x]
        for name in self.stage_names:
            x = getattr(self, name)(x)
            maps.append(x)
        maps[-1] = self.final_act(maps[-1])
        return maps

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.feature_maps(x)[1:]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, batch x num_features x h x w."""
        x = self.forward_stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.final_act(x)

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Between the pooled features and the classifier (VGG's fc6-fc7, dropout); none by default."""
        return x

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool, ``pre_logits``, then the classifier; ``pre_logits=True`` stops before it."""
        if self.features_only:
            raise ConfigError(f"{self._model_name()} was built with features_only=True: it has no head")
        x = features if self.global_pool is None else self.global_pool(features).flatten(1)
        x = self.pre_logits(x)
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            maps = self.feature_maps(x)
            return [maps[i] for i in self.out_indices]
        return self.forward_head(self.forward_features(x))

    # --- introspection ------------------------------------------------------------------------------

    def residual_blocks(self) -> list[tuple[str, nn.Module]]:
        """The units a lesion study can delete (``forward_shortcut``); none unless the family has them."""
        return []

    def _resolve(self, path: str) -> nn.Module | None:
        # Walks ``_modules`` itself: ``fc`` is a property here, so getattr("fc") would call it again.
        module: nn.Module | None = self
        for part in path.split("."):
            module = module._modules.get(part) if module is not None else None
        return module

    def get_classifier(self, name_only: bool = False) -> nn.Module | str | None:
        if name_only:  # timm's: the classifier's module name (VGG's "classifier.6", timm's "last_linear")
            return self.classifier_name
        return None if self.features_only else self._resolve(self.classifier_name)

    @property
    def fc(self) -> nn.Module | None:
        """The classifier (the interface's name for it, whatever the reference calls it: VGG's
        ``classifier.6``, timm's ``last_linear``); ``nn.Identity`` with ``num_classes=0``."""
        return self.get_classifier()

    @property
    def default_cfg(self) -> dict:
        """timm's older name for ``pretrained_cfg``."""
        return self.pretrained_cfg

    def make_classifier(self, num_classes: int) -> nn.Module:
        """A fresh classifier for ``num_classes`` (0: ``nn.Identity``) on the model's device and dtype."""
        if not num_classes:
            return nn.Identity()
        ref = next(iter(self.parameters()), None)
        factory = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
        return nn.Linear(self.head_features, num_classes, **factory)

    @property
    def head_features(self) -> int:
        """The classifier's input width (``num_features`` unless ``pre_logits`` changes it)."""
        return self.num_features

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh classifier for ``num_classes`` (fine-tuning); 0 removes it, as in timm. The recorded spec
        follows."""
        if self.features_only:
            raise ConfigError(f"{self._model_name()} was built with features_only=True: it has no classifier")
        num_classes = check_num_classes(num_classes)
        if global_pool is None:
            global_pool = "avg" if self.global_pool is not None else ""
        check_choice("global_pool", global_pool, self.global_pools)
        if not global_pool and num_classes:
            raise ConfigError(
                "global_pool='' (no pooling) leaves a feature map that a Linear classifier "
                "cannot take: use it with num_classes=0"
            )
        classifier = self.make_classifier(num_classes).train(self.training)
        self._set_module(self.classifier_name, classifier)
        self.global_pool = nn.AdaptiveAvgPool2d(1) if global_pool else None
        self.num_classes = num_classes
        self.pretrained_cfg["num_classes"] = num_classes
        if self.resnets_spec is not None:
            self.resnets_spec["kwargs"]["num_classes"] = num_classes
            if global_pool != "avg" or "global_pool" in self.resnets_spec["kwargs"]:
                self.resnets_spec["kwargs"]["global_pool"] = global_pool


def is_meta(model: nn.Module) -> bool:
    """Built on the meta device (summary(), the FX tests): nothing to initialise."""
    return next(model.parameters()).is_meta
