"""The weights registry: every published weights file our zoo loads, and our own, as data.

``registry.json`` (beside this module) holds one entry per weights file: torchvision's (its ``Weights``
enums: transforms, accuracy, parameters, GFLOPS, file size), timm's ResNet-family tags (its
``pretrained_cfg`` and published results), and ours (source ``resnets``), whose measured values come from
the model card next to the shipped file in ``files/``. Names are timm's, ``model.tag``
(``resnet50.tv2_in1k``); torchvision's enum names (``IMAGENET1K_V2``) are aliases. Nothing here imports
torchvision's weights or timm: the table is plain data, checked against both libraries by the tests.
"""

from __future__ import annotations

import fnmatch
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import CheckpointError, ConfigError, unknown_name
from ..models import list_models
from .transforms import InferenceTransforms

PACKAGE = Path(__file__).parent
TABLE = PACKAGE / "registry.json"
FILES = PACKAGE / "files"  # our shipped weights and their model cards
SOURCES = ("torchvision", "timm", "resnets")
HF_FILENAME = "model.safetensors"  # the file of a timm weights repository on the Hugging Face hub
DEFAULT = "DEFAULT"  # torchvision's name for a model's recommended weights


@dataclass(frozen=True)
class WeightsEntry:
    """One weights file: where it comes from, how it is checked, how images must be prepared for it.

    ``sha256`` is what is known of the file's SHA-256: the full digest for our shipped files, the first 8
    hex digits for torchvision's (the part of torchvision's file names that ``torch.hub`` checks), "" for
    timm's Hugging Face files (the hub names each file by its SHA-256, which is checked instead).
    ``metadata`` holds the publisher's statements (dataset, ``acc@1`` / ``acc@5``, recipe, parameters,
    GFLOPS or GMACs, file size, licence); ``metrics`` the accuracies (the publisher's, or ours as measured
    for shipped weights, with the subset accuracy the tests check).
    """

    model: str
    tag: str
    source: str
    file: str
    url: str = ""
    hf_hub_id: str = ""
    sha256: str = ""
    num_classes: int = 1000
    in_chans: int = 3
    transforms: InferenceTransforms | None = None
    classes: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    default: bool = False
    shipped: bool = False
    metrics: Mapping[str, Any] = field(default_factory=dict)
    card: Mapping[str, Any] | None = None  # the model card of shipped weights (None: not in this install)

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"

    @property
    def hf_filename(self) -> str:
        return HF_FILENAME if self.hf_hub_id else ""

    @property
    def package_path(self) -> Path | None:
        """Where shipped weights lie inside the package (None for published ones)."""
        return FILES / self.file if self.shipped else None

    @property
    def dataset(self) -> str:
        return str(self.metadata.get("dataset", ""))

    def transform(self, use_test_size: bool = False):
        """The inference transform (torchvision.transforms.v2) for uint8 or PIL images."""
        return self.require_transforms().build(use_test_size=use_test_size)

    def require_transforms(self) -> InferenceTransforms:
        if self.transforms is None:
            raise CheckpointError(
                f"weights {self.name}: its model card {FILES / card_name(self.file)} is "
                "missing from this installation, so its preprocessing is unknown"
            )
        return self.transforms

    def pretrained_cfg(self) -> dict[str, Any]:
        """timm's ``pretrained_cfg`` for a model holding these weights (``timm.data.resolve_data_config``
        then gives this entry's transform)."""
        cfg = {
            "architecture": self.model,
            "tag": self.tag,
            "num_classes": self.num_classes,
            "url": self.url,
            "hf_hub_id": self.hf_hub_id,
        }
        if self.transforms is not None:
            cfg |= self.transforms.pretrained_cfg(self.in_chans)
        if self.metadata.get("license"):
            cfg["license"] = self.metadata["license"]
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON-ready), class names left out."""
        return {
            "name": self.name,
            "model": self.model,
            "tag": self.tag,
            "aliases": list(self.aliases),
            "source": self.source,
            "default": self.default,
            "shipped": self.shipped,
            "file": self.file,
            "url": self.url,
            "hf_hub_id": self.hf_hub_id,
            "sha256": self.sha256,
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "transforms": self.transforms.to_dict() if self.transforms else None,
            "metadata": dict(self.metadata),
            "metrics": dict(self.metrics),
        }


def card_name(file: str) -> str:
    """The model card beside a shipped weights file: ``resnet20-fashion_mnist.json``."""
    return Path(file).with_suffix(".json").name


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Names of the registered weights (``model.tag``, models in ``list_models`` order), optionally filtered
    by an fnmatch ``pattern`` (``"resnet50.*"``, ``"*tv2*"``), as timm's ``list_pretrained``."""
    names = [e.name for e in _registry().entries]
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def get_weights(name: str, tag: str | None = None) -> WeightsEntry:
    """The entry of ``"model.tag"`` (``"resnet50.tv2_in1k"``, ``"resnet50.IMAGENET1K_V2"``,
    ``"resnet50.DEFAULT"``), of ``(model, tag)``, of a model alone (its default weights), or of a tag alone
    when one model has it (``"fashion_mnist"``). Tags match without regard to case, ``-`` or ``_``.
    Unknown names raise ``ConfigError`` naming the closest."""
    registry = _registry()
    if not isinstance(name, str) or not name:
        raise ConfigError(f"weights name must be a non-empty string, got {name!r}")
    model, _, rest = name.partition(".")
    if tag is None and rest and model in registry.models:
        tag = rest
    elif tag is None:
        model = name
    if tag is None:
        if model in registry.defaults:
            return registry.defaults[model]
        found = registry.by_tag.get(_key(name), [])
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ConfigError(
                f"weights {name!r} exist for several models ({', '.join(e.model for e in found)}); "
                f"name one: {', '.join(e.name for e in found)}"
            )
        if name in list_models():
            raise ConfigError(
                f"model {name} has no published or shipped weights; models with weights: "
                f"{', '.join(registry.models)}"
            )
        raise unknown_name("weights name", name, list_pretrained())
    if model not in registry.models:
        if model in list_models():
            raise ConfigError(
                f"model {model} has no published or shipped weights; models with weights: "
                f"{', '.join(registry.models)}"
            )
        raise unknown_name("weights name", f"{model}.{tag}", list_pretrained())
    if _key(tag) == _key(DEFAULT):
        return registry.defaults[model]
    entry = registry.by_model_tag.get((model, _key(tag)))
    if entry is None:
        known = [e.name for e in registry.entries if e.model == model]
        known += [f"{e.model}.{a}" for e in registry.entries if e.model == model for a in e.aliases]
        raise unknown_name("weights name", f"{model}.{tag}", known)
    return entry


def default_weights(model: str) -> WeightsEntry:
    """A model's default weights: torchvision's ``DEFAULT`` for torchvision's models, timm's default tag
    for timm's, the main job's for our CIFAR-style nets."""
    return get_weights(model)


def find_file(path: str | Path) -> WeightsEntry | None:
    """The entry whose file has this name (torchvision's names carry their hash; ours and the timm cache
    names are unique), or None."""
    return _registry().by_file.get(Path(path).name)


def reload() -> None:
    """Read the table and the model cards again (after a card was written)."""
    _registry.cache_clear()


def entries() -> tuple[WeightsEntry, ...]:
    return _registry().entries


def class_names(dataset: str) -> tuple[str, ...]:
    """The class names the table holds: ``"imagenet-1k"`` (torchvision's, in logit order) and
    ``"fashion-mnist"``."""
    return _registry().classes.get(dataset, ())


def _key(tag: str) -> str:
    return tag.lower().replace("-", "_")


@dataclass(frozen=True)
class _Registry:
    entries: tuple[WeightsEntry, ...]
    models: tuple[str, ...]
    defaults: Mapping[str, WeightsEntry]
    by_model_tag: Mapping[tuple[str, str], WeightsEntry]
    by_tag: Mapping[str, list[WeightsEntry]]
    by_file: Mapping[str, WeightsEntry]
    classes: Mapping[str, tuple[str, ...]]


@functools.cache
def _registry() -> _Registry:
    table = json.loads(TABLE.read_text(encoding="utf-8"))
    registered = set(list_models())
    built = tuple(_entry(row, table["classes"], registered) for row in table["entries"])
    return index(built, table["classes"])


def index(built: tuple[WeightsEntry, ...], classes: Mapping[str, list[str]]) -> _Registry:
    """The lookup tables of a list of entries (each name once, one default per model)."""
    by_model_tag: dict[tuple[str, str], WeightsEntry] = {}
    by_tag: dict[str, list[WeightsEntry]] = {}
    for entry in built:
        for tag in (entry.tag, *entry.aliases):
            if (entry.model, _key(tag)) in by_model_tag:
                raise RuntimeError(f"registry.json: {entry.model}.{tag} is listed twice")
            by_model_tag[entry.model, _key(tag)] = entry
            by_tag.setdefault(_key(tag), []).append(entry)
    models = tuple(dict.fromkeys(e.model for e in built))
    defaults = {e.model: e for e in built if e.default}
    if set(defaults) != set(models) or sum(e.default for e in built) != len(models):
        raise RuntimeError("registry.json: every model needs exactly one default entry")
    return _Registry(
        built,
        models,
        MappingProxyType(defaults),
        MappingProxyType(by_model_tag),
        MappingProxyType(by_tag),
        MappingProxyType({e.file: e for e in built}),
        MappingProxyType({k: tuple(v) for k, v in classes.items()}),
    )


def _entry(row: dict[str, Any], classes: dict[str, list[str]], registered: set[str]) -> WeightsEntry:
    if row["model"] not in registered or row["source"] not in SOURCES:
        raise RuntimeError(f"registry.json: {row['model']}.{row['tag']} names an unknown model or source")
    shipped = row["source"] == "resnets"
    values = dict(
        row,
        aliases=tuple(row["aliases"]),
        classes=tuple(classes.get(row["classes"], ())),
        metadata=MappingProxyType(dict(row["metadata"])),
        shipped=shipped,
    )
    values["transforms"] = InferenceTransforms.from_dict(row["transforms"]) if row["transforms"] else None
    if shipped:
        values |= _card_values(row)
    else:
        values["metrics"] = MappingProxyType(
            {k: row["metadata"][k] for k in ("acc@1", "acc@5") if k in row["metadata"]}
        )
    return WeightsEntry(**values)


def _card_values(row: dict[str, Any]) -> dict[str, Any]:
    """What the model card of shipped weights adds: its hash, preprocessing, accuracy and provenance."""
    path = FILES / card_name(row["file"])
    if not path.is_file():
        return {}
    card = json.loads(path.read_text(encoding="utf-8"))
    if card.get("model") != row["model"] or card.get("tag") != row["tag"] or card.get("file") != row["file"]:
        raise RuntimeError(f"model card {path} is not the card of {row['model']}.{row['tag']}")
    metadata = {
        **row["metadata"],
        **{
            k: card[k]
            for k in (
                "dataset",
                "recipe",
                "command",
                "date",
                "cpu",
                "training_time_s",
                "file_size_mb",
                "params",
            )
            if k in card
        },
    }
    return {
        "sha256": card["sha256"],
        "transforms": InferenceTransforms.from_dict(card["transforms"]),
        "metrics": MappingProxyType(dict(card["metrics"])),
        "metadata": MappingProxyType(metadata),
        "card": MappingProxyType(card),
    }
