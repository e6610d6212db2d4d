"""``python -m benchmarks.ship_weights RUN --model resnet20 --tag fashion_mnist``: make shipped weights from a
finished training run (a maintainer's tool; docs/weights.md, "Shipping weights"). It lives outside the
package because it reads the training recipes (the exact command of the run), which lie in a layer above the
weights registry.

It reads the run's ``config.json``, ``summary.json`` and final weights (``model.safetensors``, with the
run's data record), checks them against the registry entry (our source, the entry's recipe, the model,
the whole training set), measures the accuracy on the real test set as ``resnets predict`` computes it
(one view, float32: all test images and the first 1,000), and writes ``files/<model>-<tag>.safetensors``
and its model card ``files/<model>-<tag>.json`` (dataset, accuracy, recipe and the exact command, date,
CPU, training time, SHA-256), each atomically, the weights first; then the cards in docs/weights.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnets.errors import ConfigError, DataError, ResnetsError
from resnets.io import write_json
from resnets.models import create_model_from_spec
from resnets.pretrained import registry
from resnets.pretrained.cards import update_docs
from resnets.pretrained.measure import SUBSET, accuracy_on_test_set
from resnets.pretrained.registry import FILES, card_name, get_weights
from resnets.pretrained.resolve import sha256_of
from resnets.pretrained.transforms import InferenceTransforms
from resnets.runs import RunFolder, check_output
from resnets.train.recipes import get_recipe
from resnets.weights import load_weights_into, load_weights_metadata, save_weights

DOCS = Path(__file__).resolve().parents[1] / "docs" / "weights.md"
CARD_FORMAT = "resnets-model-card"
# Recipe fields that change the weights' meaning if set: a run on part of the training set is a test run.
SUBSET_FIELDS = ("train_subset", "iterations")


def ship(
    run_folder: str | os.PathLike,
    model: str,
    tag: str,
    *,
    output_dir: str | os.PathLike = FILES,
    data_dir: str | os.PathLike | None = None,
    cpu: str | None = None,
    allow_subset: bool = False,
    test_images: int | None = None,
) -> dict[str, Any]:
    """Write the weights file and model card of ``model.tag`` from a finished run; return the card.
    ``test_images`` measures on the first N test images only (for the tool's own test; the card says so)."""
    entry = get_weights(model, tag)
    if entry.source != "resnets":
        raise ConfigError(
            f"weights {entry.name} are {entry.source}'s; only our own (source resnets) are shipped"
        )
    run = RunFolder(run_folder)
    summary, config = _finished_run(run)
    recipe = config["recipe"]
    overrides = _overrides(recipe)
    if recipe.get("name") != entry.metadata.get("recipe"):
        raise ConfigError(
            f"{run.path} was trained with the recipe {recipe.get('name')!r}, but {entry.name} is made by "
            f"the recipe {entry.metadata.get('recipe')!r}: ship a run of that recipe"
        )
    partial = {k: overrides[k] for k in SUBSET_FIELDS if k in overrides}
    if partial and not allow_subset:
        raise ConfigError(
            f"{run.path} trained on part of the data ({partial}): shipped weights are trained on "
            "the whole training set (--allow-subset only for trying this tool)"
        )
    out_dir = Path(output_dir)
    weights_path, card_path = out_dir / entry.file, out_dir / card_name(entry.file)
    for path in (weights_path, card_path):  # before any work
        check_output(path, "--output-dir", reads=[run.path])

    net, data = _run_model(run, model)
    if data.get("dataset") != entry.metadata.get("data"):
        raise DataError(
            f"{run.path} was trained on {data.get('dataset')!r}, {entry.name} is "
            f"{entry.metadata.get('data')!r}"
        )
    entry = dataclasses.replace(entry, transforms=_transforms(data, run.path))
    every = accuracy_on_test_set(net, entry, first=test_images, data_dir=data_dir)
    subset = accuracy_on_test_set(net, entry, first=min(SUBSET, test_images or SUBSET), data_dir=data_dir)

    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(net, weights_path, metadata={"data": data, "weights": entry.name})
    _check_written(net, weights_path, model)
    card = {
        "format": CARD_FORMAT,
        "format_version": 1,
        "model": entry.model,
        "tag": entry.tag,
        "file": entry.file,
        "sha256": sha256_of(weights_path),
        "file_size_mb": round(weights_path.stat().st_size / 1e6, 3),
        "params": sum(p.numel() for p in net.parameters()),
        "dataset": entry.dataset,
        "num_classes": net.num_classes,
        "in_chans": net.in_chans,
        "classes": list(data["classes"]),
        "transforms": entry.transforms.to_dict(),
        "metrics": {
            "acc@1": round(every["acc@1"], 2),
            "acc@5": round(every["acc@5"], 2),
            "images": every["images"],
            "subset_acc@1": round(subset["acc@1"], 2),
            "subset_acc@5": round(subset["acc@5"], 2),
            "subset_images": subset["images"],
        },
        "evaluation": (
            f"one view per image ({entry.dataset} test set in file order, resize "
            f"{entry.transforms.resize_size}, crop {entry.transforms.crop_size}), float32 on the CPU, "
            "as resnets predict computes it"
        ),
        "recipe": recipe["name"],
        "overrides": overrides,
        "command": _command(recipe["name"], overrides, config),
        "date": _date(run),
        "cpu": cpu or cpu_name(),
        "training_time_s": round(float(summary["elapsed_s"]), 1),
        "run": {
            "epochs": summary.get("epochs_done"),
            "images_per_s": round(float(summary.get("images_per_s", 0)), 1),
            "precision": summary.get("precision"),
            "final_test_error": summary.get("final_test_error"),
            "tta": recipe.get("tta"),
            "world_size": summary.get("world_size"),
        },
        "versions": _versions(run),
        "shipped_on": datetime.date.today().isoformat(),
    }
    write_json(card_path, card)
    return card


def cpu_name() -> str:
    """The CPU model of this machine (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _finished_run(run: RunFolder) -> tuple[dict, dict]:
    if not run.path.is_dir():
        raise ConfigError(f"{run.path} is not a run folder")
    summary = run.summary()
    if summary is None or not run.weights_path.is_file():
        raise DataError(
            f"{run.path} is not a finished run (it needs {run.summary_path.name} and "
            f"{run.weights_path.name}); let the run finish"
        )
    config = run.config()
    if not isinstance(config.get("recipe"), dict):
        raise DataError(f"{run.config_path} holds no recipe")
    return summary, config


def _overrides(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe fields the run changed from its named recipe (the ``--set`` flags of its command)."""
    base = get_recipe(recipe["name"]).to_dict()
    return {k: v for k, v in recipe.items() if k != "name" and k in base and base[k] != v}


def _command(name: str, overrides: dict[str, Any], config: dict[str, Any]) -> str:
    sets = "".join(f" --set {k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items())
    output = (config.get("run") or {}).get("output")
    return f"resnets train --recipe {name}{sets}" + (f" --output {output}" if output else "")


def _run_model(run: RunFolder, model: str) -> tuple[nn.Module, dict[str, Any]]:
    """The run's final weights (those it evaluated: the EMA's where it kept one) and its data record."""
    metadata = load_weights_metadata(run.weights_path)
    try:
        spec, data = json.loads(metadata["model"]), json.loads(metadata["data"])
    except (KeyError, ValueError):
        raise DataError(
            f"{run.weights_path} has no model spec or data record: is it a run's weights?"
        ) from None
    if spec.get("name") != model:
        raise ConfigError(f"{run.path} trained {spec.get('name')!r}, not {model!r}")
    net = create_model_from_spec(spec)
    load_weights_into(net, run.weights_path, replace_head=False)
    return net.eval(), data


def _transforms(data: dict[str, Any], source: Path) -> InferenceTransforms:
    """The run's evaluation preprocessing as an inference transform (per-channel statistics only)."""
    norm, prep = data["normalization"], data["eval_preprocess"]
    if norm.get("mode") != "per_channel":
        raise DataError(
            f"{source} normalises per pixel (a mean image): the inference transform of shipped "
            "weights takes per-channel statistics; ship a per_channel run"
        )
    mean = [float(v) for v in torch.tensor(norm["mean"]).flatten()]
    std = [float(v) for v in torch.tensor(norm["std"]).flatten()]
    resize, crop = int(prep["resize"]), int(prep["crop"])
    return InferenceTransforms(
        resize_size=resize,
        crop_size=crop,
        interpolation=prep.get("interpolation", "bilinear"),
        mean=tuple(mean),
        std=tuple(std),
        crop_pct=round(crop / resize, 4),
    )


def _check_written(net: nn.Module, path: Path, model: str) -> None:
    """The written file loads strictly into a fresh model and gives back every tensor."""
    fresh = create_model_from_spec(json.loads(load_weights_metadata(path)["model"]))
    load_weights_into(fresh, path, replace_head=False)
    theirs = net.state_dict()
    if any(not torch.equal(v, theirs[k]) for k, v in fresh.state_dict().items()):
        raise RuntimeError(f"{path} does not give back the weights of {model}")  # a bug, not the user's


def _date(run: RunFolder) -> str:
    """The day the run finished (its summary's time)."""
    return datetime.date.fromtimestamp(run.summary_path.stat().st_mtime).isoformat()


def _versions(run: RunFolder) -> dict[str, str]:
    try:
        return dict(torch.load(run.last, map_location="cpu", weights_only=True).get("versions") or {})
    except Exception:  # an unreadable or removed last.pt only costs the versions line
        return {"torch": torch.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ship_weights",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", metavar="RUN_FOLDER", help="a finished `resnets train` run")
    parser.add_argument("--model", required=True, help="the registry entry's model (resnet20)")
    parser.add_argument(
        "--tag", required=True, help="the registry entry's tag (fashion_mnist, fashion_mnist_best)"
    )
    parser.add_argument("--data-dir", help="where the dataset lives (default: resnets' search order)")
    parser.add_argument(
        "--output-dir",
        default=str(FILES),
        help=f"where the files go (default: the package's {FILES}); another folder leaves the docs alone",
    )
    parser.add_argument("--docs", default=str(DOCS), help="docs/weights.md, whose cards are rewritten")
    parser.add_argument("--cpu", help="the CPU that trained the run (default: this machine's)")
    parser.add_argument(
        "--allow-subset",
        action="store_true",
        help="accept a run on part of the training set (to try the tool; never to ship)",
    )
    args = parser.parse_args(argv)
    try:
        card = ship(
            args.run,
            args.model,
            args.tag,
            output_dir=args.output_dir,
            data_dir=args.data_dir,
            cpu=args.cpu,
            allow_subset=args.allow_subset,
        )
    except ResnetsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output_dir)
    m = card["metrics"]
    print(
        f"wrote {out / card['file']} and {out / card_name(card['file'])}: top-1 {m['acc@1']:.2f} % on "
        f"{m['images']:,} test images, {m['subset_acc@1']:.2f} % on the first {m['subset_images']:,}; "
        f"SHA-256 {card['sha256']}"
    )
    if out.resolve() == FILES.resolve() and Path(args.docs).is_file():
        registry.reload()  # the registry now finds the new card
        update_docs(args.docs)
        print(f"updated {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
