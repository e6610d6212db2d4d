"""A model with weights: what ``resnets.create_model(name, pretrained=...)``, ``weights=...``, ``hubconf`` and
``resnets predict --weights`` call.

A request is ``pretrained=True`` (the model's default weights), a tag (``"tv2_in1k"``, ``"IMAGENET1K_V2"``,
``"resnet50.a1_in1k"``), torchvision's ``weights=`` (an enum name, ``"DEFAULT"`` or a torchvision
``Weights`` member), or a file path. Registry weights are found by ``resolve.weights_file``; every file
loads through ``resnets.weights.load_weights_into``, the key translation ``resnets import-weights`` uses.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import CheckpointError, ConfigError
from ..models import create_model as build_model
from ..models import list_models
from ..weights import ImportReport, load_weights_into
from .registry import WeightsEntry, find_file, get_weights
from .resolve import check_file, weights_file


@dataclass(frozen=True)
class WeightsRequest:
    """Registry weights (``path`` None: found by ``resolve.weights_file``), a user's copy of them (both),
    or a file the registry does not know (``entry`` None)."""

    entry: WeightsEntry | None = None
    path: Path | None = None


def split_name(name: str) -> tuple[str, str | None]:
    """timm's ``"resnet50.a1_in1k"``: (model, tag); a plain model name: (name, None)."""
    model, dot, tag = name.partition(".")
    return (model, tag) if dot and model in list_models() else (name, None)


def requested_weights(
    model: str, pretrained: object = False, weights: object = None
) -> WeightsRequest | None:
    """The entry or the file that ``pretrained`` / ``weights`` ask for (None: no weights)."""
    asked = [v for v in (pretrained, weights) if v not in (False, None, 0, "")]
    if len(asked) > 1:
        raise ConfigError(
            f"{model}: pretrained={pretrained!r} and weights={weights!r} both ask for weights; give one"
        )
    if not asked:
        return None
    request = asked[0]
    if request is True or request == 1:
        return WeightsRequest(_for_model(model, get_weights(model)))
    if isinstance(request, enum.Enum) and hasattr(request, "url"):  # a torchvision Weights member
        entry = find_file(str(request.url).rsplit("/", 1)[-1])
        if entry is None:
            raise ConfigError(
                f"{model}: {request} is not a weights file our zoo loads; see list_pretrained()"
            )
        return WeightsRequest(_for_model(model, entry))
    if isinstance(request, os.PathLike) or (isinstance(request, str) and _looks_like_path(request)):
        entry, path = local_entry_file(request)
        return WeightsRequest(entry if entry is not None and entry.model == model else None, path)
    if isinstance(request, str):
        owner, tag = split_name(request)
        return WeightsRequest(
            _for_model(model, get_weights(owner, tag) if tag else get_weights(model, request))
        )
    raise ConfigError(
        f"{model}: pretrained={pretrained!r}, weights={weights!r}: expected True, a weights tag "
        "(see resnets.pretrained.list_pretrained()) or a file path"
    )


def create_pretrained(
    name: str,
    pretrained: object = False,
    *,
    weights: object = None,
    checkpoint_path: str | os.PathLike | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build ``name`` (``"model"`` or timm's ``"model.tag"``) with its options, load the requested weights,
    then ``checkpoint_path`` if given (as timm's ``create_model``). An entry sets the class count and input
    channels unless the caller sets them: another class count keeps a fresh head (fine-tuning), another
    channel count adapts the stem filters (``load_weights_into``)."""
    model_name, tag = split_name(name)
    if tag is not None and pretrained in (True, 1):
        pretrained = tag
    request = requested_weights(model_name, pretrained, weights)
    if request is not None and request.entry is not None:
        kwargs.setdefault("num_classes", request.entry.num_classes)
        kwargs.setdefault("in_chans", request.entry.in_chans)
    model = build_model(model_name, **kwargs)
    if request is not None:
        load_requested(model, request)
        for cfg in (kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay")):
            if cfg:  # the caller's own values stay on top of the weights' (as timm's overlay)
                model.pretrained_cfg.update(cfg)
    if checkpoint_path:
        load_weights_into(model, checkpoint_path)
    return model


def load_requested(
    model: nn.Module, request: WeightsRequest, *, download: bool | None = None
) -> ImportReport:
    """Load the requested file into ``model``; for registry weights, their ``pretrained_cfg`` then
    describes the model's data (as timm's ``create_model(pretrained=True)`` sets it)."""
    entry = request.entry
    path = request.path if request.path is not None else weights_file(entry, download=download)
    report = load_weights_into(model, path)
    if entry is not None and isinstance(getattr(model, "pretrained_cfg", None), dict):
        model.pretrained_cfg.update(entry.pretrained_cfg())
        model.pretrained_cfg["num_classes"] = getattr(model, "num_classes", entry.num_classes)
    return report


def local_entry_file(path: str | os.PathLike) -> tuple[WeightsEntry | None, Path]:
    """A user's file and the registry entry it is a copy of, if any (found by its file name, which is
    unique, then hash-checked: torchvision's names carry their hash)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist (or is not a file)")
    entry = find_file(path)
    if entry is not None:
        check_file(path, entry)
    return entry, path


def _for_model(model: str, entry: WeightsEntry) -> WeightsEntry:
    if entry.model != model:
        raise ConfigError(
            f"weights {entry.name} are for {entry.model}, not {model}: create {entry.model}, or "
            f"choose one of {model}'s weights (resnets.pretrained.list_pretrained('{model}.*'))"
        )
    return entry


def _looks_like_path(text: str) -> bool:
    return os.sep in text or text.endswith((".pth", ".pt", ".bin", ".safetensors")) or Path(text).is_file()
