"""Model registry: ``@register_model`` builders, ``create_model`` and specs that rebuild a model.

A builder is one declarative line, ``return build_model(ResNet, kwargs, block=..., layers=...)``.
Every keyword a user passes is checked against the model's options: nothing is dropped silently. An
option of another family (dilation on a CIFAR net) or one the architecture refuses (stochastic depth on
a plain net) is an error that says so.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import inspect
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ..errors import ConfigError, unknown_name
from .norms import spec_value

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_FAMILIES: dict[type, None] = {}  # the model classes (``@register_family``), for the other-family hint


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its own name; models it builds record their spec (name and arguments)."""
    name = fn.__name__
    if name in _MODELS:
        raise RuntimeError(f"model {name!r} registered twice")

    @functools.wraps(fn)
    def builder(**kwargs: Any) -> nn.Module:
        model = fn(**kwargs)
        spec_kwargs = {
            **{k: spec_value(v) for k, v in kwargs.items()},
            "num_classes": model.num_classes,
            "in_chans": model.in_chans,
        }
        try:  # a spec must survive JSON (checkpoints, run configs); tuples come back as lists
            spec_kwargs = json.loads(json.dumps(spec_kwargs))
        except TypeError as exc:
            raise ConfigError(f"options must be plain values (numbers, strings, lists): {exc}") from None
        model.resnets_spec = {"name": name, "kwargs": spec_kwargs}
        if isinstance(getattr(model, "pretrained_cfg", None), dict):
            model.pretrained_cfg["architecture"] = name
        return model

    _MODELS[name] = builder
    return builder


def register_family(cls: type) -> type:
    """Class decorator: a model class whose ``family`` (e.g. "ImageNet-family") error messages may name."""
    _FAMILIES[cls] = None
    return cls


def model_options(cls: type, fixed: dict[str, Any]) -> dict[str, Any]:
    """The keyword options of ``cls`` a user may set (those the architecture does not fix) and defaults."""
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY and p.name not in fixed}


def build_model(
    cls: type[nn.Module],
    overrides: dict[str, Any],
    *,
    builder_options: tuple[str, ...] = (),
    refused: Mapping[str, str] | None = None,
    **fixed: Any,
) -> nn.Module:
    """``cls(**fixed, **overrides)`` after checking that every override is one of the model's options.

    ``builder_options`` names the builder's own keywords (e.g. ``depth``), listed among the valid ones.
    ``refused`` maps options of ``cls`` that this architecture cannot take to the reason, which the error
    gives (they keep the class default).
    """
    refused = refused or {}
    valid = [*builder_options, *(k for k in model_options(cls, fixed) if k not in refused)]
    for key in overrides:
        if key in refused:
            raise ConfigError(f"option {key!r} does not apply to this architecture: {refused[key]}")
        if key in fixed:
            raise ConfigError(
                f"option {key!r} is fixed by this architecture ({key}={fixed[key]!r}); "
                f"options you can set: {', '.join(valid)}"
            )
        if key not in valid or key in builder_options:
            raise _other_family_error(key, cls, valid) or unknown_name("option", key, valid)
    return cls(**fixed, **overrides)


def _other_family_error(key: str, cls: type, valid: list[str]) -> ConfigError | None:
    """An error naming the family that has option ``key``, when another one does."""
    owners = [other for other in _FAMILIES if other is not cls and key in model_options(other, {})]
    if not owners:
        return None
    family = getattr(owners[0], "family", owners[0].__name__)
    this = getattr(cls, "family", cls.__name__)
    return ConfigError(
        f"option {key!r} belongs to the {family} models, not to {this} models; "
        f"options you can set: {', '.join(valid)}"
    )


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names (natural order), optionally filtered by an fnmatch ``pattern``."""
    names = sorted(_MODELS, key=_natural_key)
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern)]


# timm's create_model keywords that change nothing here (no weights are fetched, nothing is scripted)
_NO_OP_OPTIONS = ("cache_dir", "scriptable", "exportable", "no_jit", "progress")


def weights_load_at_the_top(name: str, what: str) -> ConfigError:
    return ConfigError(
        f"{name}: {what} asks for weights, which resnets.models.create_model does not load "
        "(it builds the architecture); use resnets.create_model(name, pretrained=...) or "
        "resnets.pretrained.load_requested"
    )


def check_pretrained(
    name: str, pretrained: object = False, weights: object = None, pretrained_cfg: object = None
) -> None:
    """timm's ``pretrained`` / ``pretrained_cfg`` and torchvision's ``weights``: False / None are accepted
    here; weights are loaded one layer up, by ``resnets.create_model`` (``resnets.pretrained``), and a
    request that reaches this function says so."""
    if pretrained not in (False, None, 0):
        raise weights_load_at_the_top(name, f"pretrained={pretrained!r}")
    if weights is not None:
        raise weights_load_at_the_top(name, f"weights={weights!r}")
    if pretrained_cfg is not None and not isinstance(pretrained_cfg, Mapping):
        raise ConfigError(
            f"{name}: pretrained_cfg={pretrained_cfg!r} must be a dict (it updates "
            "model.pretrained_cfg); choose weights with pretrained='<tag>'"
        )


def create_model(
    name: str,
    pretrained: bool | str = False,
    *,
    num_classes: int | None = None,
    in_chans: int = 3,
    pretrained_cfg: Mapping[str, Any] | None = None,
    pretrained_cfg_overlay: Mapping[str, Any] | None = None,
    weights: object = None,
    **overrides: Any,
) -> nn.Module:
    """Build a registered model. ``num_classes=None`` keeps the family default (1000 ImageNet, 10 CIFAR);
    0 builds no classifier (timm's convention: the model returns its pooled features).

    timm's and torchvision's keywords: ``pretrained=False`` / ``weights=None`` (weights are loaded by
    ``resnets.create_model``, the layer above: a request here raises, saying so), ``pretrained_cfg`` /
    ``pretrained_cfg_overlay`` (dicts updating ``model.pretrained_cfg``), and ``progress``, ``cache_dir``,
    ``scriptable``, ``exportable``, ``no_jit`` (no effect). ``checkpoint_path`` is ``resnets.create_model``'s
    (it loads a file).

    Raises ConfigError for an unknown name (with the closest names), an unknown option (with the valid
    ones) or an invalid value.
    """
    if name not in _MODELS:
        raise unknown_name("model", name, _MODELS)
    check_pretrained(name, pretrained, weights, pretrained_cfg)
    for option in _NO_OP_OPTIONS:
        overrides.pop(option, None)
    if overrides.get("checkpoint_path") is not None:
        raise ConfigError(f"{name}: checkpoint_path loads a file: use resnets.create_model")
    overrides.pop("checkpoint_path", None)
    kwargs = dict(overrides, in_chans=in_chans)
    if overrides.get("features_only") and num_classes:
        raise ConfigError(
            f"{name}: features_only=True builds no classifier; leave out num_classes={num_classes}"
        )
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        model = _MODELS[name](**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    for cfg in (pretrained_cfg, pretrained_cfg_overlay):
        if cfg:
            model.pretrained_cfg.update(cfg)
    return model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel (``.module``) or torch.compile (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def model_spec(model: nn.Module) -> dict[str, Any]:
    """``{"name": ..., "kwargs": {...}}``, JSON-serialisable, enough for ``create_model_from_spec``."""
    spec = getattr(unwrap_model(model), "resnets_spec", None)
    if spec is None:
        raise ConfigError("this model was not built by resnets.create_model, so it has no spec to record")
    return copy.deepcopy(spec)


def create_model_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a model (fresh weights) from ``model_spec(model)``."""
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("name"), str)
        or not isinstance(spec.get("kwargs", {}), dict)
    ):
        raise ConfigError(f"a model spec is {{'name': str, 'kwargs': dict}}, got {spec!r}")
    return create_model(spec["name"], **spec.get("kwargs", {}))
