"""The weights registry against its publishers: every torchvision entry's transforms and metadata equal the
installed torchvision's ``Weights`` enums, every timm entry's transform equals timm's ``resolve_data_config``
and ``create_transform`` for that tag; the registry holds every ResNet-family weights of both that our zoo
builds; names resolve as torchvision's and timm's users write them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from test_model_parity import TORCHVISION_NAMES
from test_model_variants import VARIANTS
from torchvision.models import get_model_weights

import resnets
from resnets.errors import ConfigError
from resnets.pretrained import InferenceTransforms, entries, get_weights, list_pretrained
from resnets.pretrained.registry import FILES

timm = pytest.importorskip("timm")
from timm.data import create_transform, resolve_data_config  # noqa: E402
from timm.models import get_pretrained_cfg  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TORCHVISION = [e for e in entries() if e.source == "torchvision"]
TIMM = [e for e in entries() if e.source == "timm"]
RESNET_FAMILY = ("resnet", "resnext", "wide_resnet", "seresnet", "seresnext", "resnetv2")


def test_torchvision_entries_equal_torchvisions_weights():
    published = {(m, w.name) for m in TORCHVISION_NAMES for w in get_model_weights(m)}
    assert {(e.model, e.aliases[0]) for e in TORCHVISION} == published  # all of them, nothing else
    for entry in TORCHVISION:
        weights = get_model_weights(entry.model)
        w = weights[entry.aliases[0]]
        t, meta = w.transforms(), w.meta
        assert (
            entry.transforms.resize_size == t.resize_size[0] and entry.transforms.crop_size == t.crop_size[0]
        )
        assert entry.transforms.interpolation == t.interpolation.value and t.antialias is True
        assert entry.transforms.mean == tuple(t.mean) and entry.transforms.std == tuple(t.std)
        assert (
            math.floor(entry.transforms.crop_size / entry.transforms.crop_pct) == entry.transforms.resize_size
        )
        assert entry.url == w.url and entry.file == w.url.rsplit("/", 1)[1]
        assert entry.file.endswith(f"-{entry.sha256}.pth") and len(entry.sha256) == 8  # torch.hub's check
        assert entry.default == (weights.DEFAULT is w)
        metrics = meta["_metrics"]["ImageNet-1K"]
        assert dict(entry.metrics) == {"acc@1": metrics["acc@1"], "acc@5": metrics["acc@5"]}
        m = entry.metadata
        assert (m["params"], m["gflops"], m["file_size_mb"], m["recipe"]) == (
            meta["num_params"],
            meta["_ops"],
            meta["_file_size"],
            meta["recipe"],
        )
        assert list(entry.classes) == list(meta["categories"]) and entry.num_classes == len(
            meta["categories"]
        )
        assert entry.tag == {"IMAGENET1K_V1": "tv_in1k", "IMAGENET1K_V2": "tv2_in1k"}[w.name]
        assert get_pretrained_cfg(entry.name).tag == entry.tag  # timm's name for the same file


def test_timm_entries_equal_timms_data_config():
    for entry in TIMM:
        cfg = get_pretrained_cfg(entry.name).to_dict()
        config = resolve_data_config({}, pretrained_cfg=cfg)
        t = entry.transforms
        assert (3, t.crop_size, t.crop_size) == config["input_size"], entry.name
        assert (t.crop_pct, t.interpolation, t.mean, t.std) == (
            config["crop_pct"],
            config["interpolation"],
            config["mean"],
            config["std"],
        ), entry.name
        for use_test_size in (False, True):
            ops = create_transform(
                **resolve_data_config({}, pretrained_cfg=cfg, use_test_size=use_test_size)
            ).transforms
            resize, crop = t.sizes(use_test_size)
            assert (ops[0].size, tuple(ops[1].size)) == (resize, (crop, crop)), (
                entry.name
            )  # timm's Resize, CenterCrop
        test = cfg.get("test_input_size")
        assert t.test_input_size == (test[-1] if test else None), entry.name
        assert (entry.hf_hub_id, entry.num_classes, entry.metadata.get("license")) == (
            cfg["hf_hub_id"],
            cfg["num_classes"],
            cfg.get("license"),
        ), entry.name
        if entry.model not in TORCHVISION_NAMES:  # timm's default tag is the model's default
            assert entry.default == (get_pretrained_cfg(entry.model).tag == entry.tag), entry.name


def test_the_registry_holds_every_resnet_family_weights_our_zoo_loads():
    """Every timm tag of an architecture we build (torchvision's copies as torchvision's entries); each
    architecture's state dict is proved equal to its publisher's by the parity and variants tests."""
    ours = set(resnets.list_models())
    expected = {n for n in timm.list_pretrained() if n.split(".")[0] in ours and n.startswith(RESNET_FAMILY)}
    published = {e.name for e in entries() if not e.shipped}
    assert published == expected
    assert {e.model for e in entries() if not e.shipped} <= set(TORCHVISION_NAMES) | set(VARIANTS)
    assert {e.model for e in entries() if e.shipped} == {"resnet20"}


def test_names_resolve_as_torchvision_and_timm_users_write_them():
    v2 = get_weights("resnet50.tv2_in1k")
    for name in ("resnet50.IMAGENET1K_V2", "resnet50.imagenet1k_v2", "resnet50.DEFAULT", "resnet50"):
        assert get_weights(name) is v2
    assert get_weights("resnet50", "IMAGENET1K_V2") is v2 and get_weights("resnet50", "tv2_in1k") is v2
    assert get_weights("fashion-mnist") is get_weights("resnet20.fashion_mnist")  # a tag one model has
    assert list_pretrained("resnet50.tv*") == ["resnet50.tv_in1k", "resnet50.tv2_in1k"]
    assert len(list_pretrained()) == len(entries()) == len(set(list_pretrained()))
    with pytest.raises(
        ConfigError, match=r"unknown weights name 'resnet50.tv3_in1k'. Did you mean: resnet50.tv"
    ):
        get_weights("resnet50.tv3_in1k")
    with pytest.raises(ConfigError, match="Did you mean: resnet50.a1_in1k"):
        get_weights("resnet5.a1_in1k")
    with pytest.raises(ConfigError, match="several models"):
        get_weights("a1_in1k")


def test_the_transform_gives_what_torchvisions_gives():
    """On a PIL image (what torchvision's users pass), the entry's v2 pipeline equals
    ``ResNet50_Weights.IMAGENET1K_V2.transforms()``; on the uint8 tensor, its antialiased resize agrees."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8), "RGB")
    entry = get_weights("resnet50.IMAGENET1K_V2")
    theirs = get_model_weights("resnet50").IMAGENET1K_V2.transforms()(image)
    ours = entry.transform()(image)
    assert ours.shape == theirs.shape == (3, 224, 224)
    torch.testing.assert_close(ours.as_subclass(torch.Tensor), theirs, rtol=0, atol=1e-6)
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    from_tensor = entry.transform()(tensor).as_subclass(torch.Tensor)
    assert (from_tensor - theirs).abs().mean() < 0.02  # PIL's and torch's antialiasing differ slightly
    # timm's test size: 288 / crop 1.0 for resnet50.a1_in1k.
    assert InferenceTransforms.sizes(get_weights("resnet50.a1_in1k").transforms, True) == (288, 288)


def test_a_models_pretrained_cfg_gives_the_entrys_transform():
    entry = get_weights("resnet50d.ra2_in1k")
    cfg = {**resnets.create_model("resnet50d").pretrained_cfg, **entry.pretrained_cfg()}
    config = resolve_data_config({}, pretrained_cfg=cfg)
    resize = create_transform(**config).transforms[0].size
    assert (resize, config["input_size"][-1], config["interpolation"]) == (
        entry.transforms.resize_size,
        entry.transforms.crop_size,
        entry.transforms.interpolation,
    )


def test_shipped_entries_are_ours_and_say_where_their_files_go():
    for entry in (e for e in entries() if e.shipped):
        assert entry.source == "resnets" and entry.package_path == FILES / entry.file
        assert entry.file == f"{entry.model}-{entry.tag}.safetensors" and not entry.url
        assert entry.metadata["recipe"] in ("fast-cpu", "fashion-best") and entry.num_classes == 10
