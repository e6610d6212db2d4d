"""Our shipped weights, without retraining: each file's SHA-256 is its card's, it loads strictly, and its
accuracy on the first 1,000 real Fashion-MNIST test images is the card's (an entry without its file fails);
docs/weights.md shows the cards as they are; the maintainer's tool that makes them, on a tiny run."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_run import run_cli, trained_run

import resnets
from benchmarks.ship_weights import ship
from resnets.data import Normalization, load_arrays
from resnets.errors import ConfigError, DataError
from resnets.pretrained import entries, get_weights, registry
from resnets.pretrained.cards import rendered_docs
from resnets.pretrained.measure import SUBSET, accuracy_on_test_set
from resnets.train.recipes import apply_overrides, get_recipe
from resnets.weights import load_weights_into, load_weights_metadata, save_weights

pytestmark = pytest.mark.usefixtures("one_thread")

DOCS = Path(__file__).resolve().parents[1] / "docs" / "weights.md"
SHIPPED = [e for e in entries() if e.shipped]


def fashion_test_set_or_skip():
    try:
        return load_arrays("fashion-mnist", "test")
    except DataError as exc:  # the real test set is needed; the weights' file is not what is missing
        pytest.skip(f"the Fashion-MNIST test set is not on this machine: {exc}")


@pytest.mark.parametrize("entry", SHIPPED, ids=[e.name for e in SHIPPED])
def test_shipped_weights_are_their_cards(entry):
    path = entry.package_path
    assert path.is_file() and entry.card is not None, (
        f"{entry.name} is in the registry but {path} or its card is missing: make them with python -m "
        f"benchmarks.ship_weights RUN --model {entry.model} --tag {entry.tag}"
    )
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.card["sha256"] == entry.sha256
    model = resnets.models.create_model(entry.model, num_classes=entry.num_classes, in_chans=entry.in_chans)
    report = load_weights_into(model, path, replace_head=False)
    assert not report.head_replaced and not report.notes  # every tensor, as it is
    assert list(entry.classes) == entry.card["classes"] == list(fashion_test_set_or_skip().classes)
    measured = accuracy_on_test_set(model, entry, first=SUBSET)
    assert measured["images"] == entry.metrics["subset_images"] == SUBSET
    assert abs(measured["acc@1"] - entry.metrics["subset_acc@1"]) <= 0.2
    assert entry.metrics["images"] == 10_000
    created = resnets.create_model(entry.model, pretrained=entry.tag).eval()  # the user's path, same tensors
    x = torch.randn(2, entry.in_chans, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(created(x), model.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("entry", SHIPPED, ids=[e.name for e in SHIPPED])
def test_each_card_command_still_trains_its_schedule(entry):
    # A recipe that changes later (fast-cpu went from 5 to 4 epochs) must leave the card's command
    # reproducing the run it records.
    card = entry.card
    recipe = apply_overrides(get_recipe(card["recipe"]), card["overrides"])
    assert recipe.epochs == card["run"]["epochs"]
    assert all(f"--set {key}=" in card["command"] for key in card["overrides"])


def test_the_docs_show_the_cards_and_the_registry_as_they_are():
    text = DOCS.read_text(encoding="utf-8")
    assert rendered_docs(text) == text, "docs/weights.md is stale: python -m resnets.pretrained.cards"


# --- the maintainer's tool, on a run made here -------------------------------------------------------------


@pytest.fixture
def fake_run(tmp_path_factory, tmp_path):
    """A finished run folder of the fast-cpu recipe with a resnet20 of random weights: the shared tiny run's
    config, summary and data record (the real formats), its model swapped for the entry's."""
    source = trained_run(tmp_path_factory)
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "summary.json", "last.pt"):
        shutil.copy(source / name, run / name)
    config = json.loads((run / "config.json").read_text())
    config["recipe"] |= {"model": "resnet20", "model_kwargs": {}}
    (run / "config.json").write_text(json.dumps(config))
    data = json.loads(load_weights_metadata(source / "model.safetensors")["data"])
    torch.manual_seed(3)
    net = resnets.create_model("resnet20", num_classes=10, in_chans=1).eval()
    save_weights(net, run / "model.safetensors", metadata={"data": data})
    return run, net, data


@pytest.fixture
def package_files(tmp_path, monkeypatch):
    """The registry's shipped files in a temporary folder."""
    files = tmp_path / "files"
    monkeypatch.setattr(registry, "FILES", files)
    registry.reload()
    yield files
    monkeypatch.undo()
    registry.reload()


def test_ship_writes_the_weights_and_a_card_that_the_registry_loads(fake_run, package_files, capsys):
    fashion_test_set_or_skip()
    run, net, data = fake_run
    with pytest.raises(ConfigError, match="part of the data"):  # a tiny run is never shipped by mistake
        ship(run, "resnet20", "fashion_mnist", output_dir=package_files)
    with pytest.raises(ConfigError, match="recipe 'fast-cpu'.*fashion-best"):
        ship(run, "resnet20", "fashion_mnist_best", output_dir=package_files, allow_subset=True)
    with pytest.raises(ConfigError, match="lies inside"):
        ship(run, "resnet20", "fashion_mnist", output_dir=run / "files", allow_subset=True)
    assert not package_files.exists()  # refused before any work

    card = ship(
        run, "resnet20", "fashion_mnist", output_dir=package_files, allow_subset=True, test_images=200
    )
    weights, card_file = (
        package_files / "resnet20-fashion_mnist.safetensors",
        package_files / "resnet20-fashion_mnist.json",
    )
    assert json.loads(card_file.read_text()) == card
    assert card["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert card["metrics"]["images"] == card["metrics"]["subset_images"] == 200
    assert (
        card["command"].startswith("resnets train --recipe fast-cpu --set ")
        and "iterations" in card["overrides"]
    )
    mean, std = data["normalization"]["mean"][0][0][0], data["normalization"]["std"][0][0][0]
    assert card["transforms"]["mean"] == [mean] and card["transforms"]["std"] == [std]
    assert card["classes"] == data["classes"] and card["training_time_s"] > 0 and card["cpu"]

    registry.reload()  # the registry now reads the card
    entry = get_weights("fashion_mnist")
    assert (
        entry.card == card
        and entry.sha256 == card["sha256"]
        and entry.metrics["acc@1"] == card["metrics"]["acc@1"]
    )
    model = resnets.create_model("resnet20", pretrained=True).eval()  # resnet20's default: these weights
    test = load_arrays("fashion-mnist", "test")
    with torch.no_grad():
        ours = model(entry.transform()(test.images[:64]).as_subclass(torch.Tensor))
        # resnets eval's preprocessing of the same images (Normalization of the run's data record)
        theirs = net(Normalization.from_dict(data["normalization"])(test.images[:64]))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert accuracy_on_test_set(model, entry, first=200)["acc@1"] == pytest.approx(
        card["metrics"]["acc@1"], abs=0.01
    )

    rendered = rendered_docs(DOCS.read_text(encoding="utf-8"))
    assert card["sha256"] in rendered and f"{card['metrics']['acc@1']:.2f} %" in rendered

    # resnets predict --weights: the entry's transform and class names.
    image = tmp_png = package_files.parent / "grey.png"
    Image.fromarray(test.images[0, 0].numpy(), "L").save(tmp_png)
    status, out, err = run_cli(
        ["predict", "--weights", "fashion-mnist", str(image), "--json", "--device", "cpu"], capsys
    )
    assert status == 0, err
    top = json.loads(out)["predictions"][0]["top"]
    expected = theirs[0].softmax(0).topk(5)
    assert [t["index"] for t in top] == expected.indices.tolist()
    assert [t["class"] for t in top] == [data["classes"][i] for i in expected.indices.tolist()]
    assert [t["probability"] for t in top] == pytest.approx(expected.values.tolist(), abs=1e-5)
    assert np.isclose(sum(t["probability"] for t in top), expected.values.sum().item(), atol=1e-5)


@pytest.mark.parametrize("entry", SHIPPED, ids=[e.name for e in SHIPPED])
def test_the_readme_gives_each_shipped_cards_accuracy(entry):
    readme = (DOCS.parent.parent / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith(f"| `{entry.name}`")]
    assert len(rows) == 1, f"README.md has no row for {entry.name}"
    assert f"**{entry.metrics['acc@1']:.2f}%**" in rows[0]  # the card's top-1 on all 10,000 test images
