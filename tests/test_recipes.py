"""Recipes: the papers' numbers, type-checked overrides, the command line that builds a config."""

import dataclasses

import pytest

from resnets.errors import ConfigError
from resnets.train.recipes import RECIPES, Recipe, RunOptions, TrainConfig, apply_overrides, get_recipe


def test_paper_cifar_is_section_4_2():
    r = get_recipe("paper-cifar")
    assert (r.batch_size, r.lr, r.momentum, r.weight_decay) == (128, 0.1, 0.9, 1e-4)
    assert r.iterations == 64_000 and r.schedule_unit == "iteration"
    assert r.milestones == (32_000, 48_000) and r.gamma == 0.1
    assert r.val_split == 5000 and r.dataset == "cifar10" and r.normalization == "per_pixel"
    assert r.warmup_until_error == 0.8 and r.warmup_until_error_factor == 0.1
    assert r.warmup_until_error_min_depth == 110


def test_imagenet_and_wrn_recipes():
    im = get_recipe("paper-imagenet")
    assert (im.batch_size, im.lr, im.weight_decay, im.momentum) == (256, 0.1, 1e-4, 0.9)
    assert im.schedule == "plateau"
    step = get_recipe("paper-imagenet-step")
    assert step.schedule == "step" and step.milestones == (30, 60) and step.epochs == 90
    wrn = get_recipe("wrn")
    assert wrn.nesterov and (wrn.lr, wrn.weight_decay, wrn.gamma) == (0.1, 5e-4, 0.2)
    assert wrn.milestones == (60, 120, 160) and wrn.epochs == 200 and wrn.batch_size == 128
    assert get_recipe("preact-cifar").warmup == 400


def test_fast_cpu_is_the_default_main_job():
    r = get_recipe("fast-cpu")
    assert (r.model, r.dataset) == ("resnet20", "fashion-mnist")
    assert r.channels_last and r.amp == "auto" and r.nesterov and r.tta == "flip" and r.label_smoothing > 0
    assert TrainConfig().recipe == r


def test_recipes_measured_on_the_former_main_job_keep_its_schedule():
    # fast-cpu moved to 4 epochs at batch 128 (issue 32); the recipes derived from it were measured, and
    # the zoo's runs trained, with its former batch 256 and keep it.
    fast = get_recipe("fast-cpu")
    assert (fast.epochs, fast.batch_size, fast.lr) == (4, 128, 0.2)
    for name, epochs in (("fashion-long", 16), ("fashion-best", 38), ("reproduce-cpu", 4)):
        r = get_recipe(name)
        assert (r.epochs, r.batch_size, r.lr, r.warmup) == (epochs, 256, 0.2, 1.0), name


def test_every_recipe_survives_a_json_round_trip():
    for recipe in RECIPES.values():
        config = TrainConfig(recipe=recipe, run=RunOptions(output="x"))
        assert TrainConfig.from_dict(config.to_dict()) == config


def test_overrides_are_parsed_by_field_type():
    r = apply_overrides(
        get_recipe("wrn"),
        {
            "milestones": "10,20",
            "lr": "1",
            "iterations": "none",
            "nesterov": "false",
            "model_kwargs": '{"shortcut": "B"}',
            "amp-dtype": "float16",
            "train_subset": "64",
        },
    )
    assert r.milestones == (10, 20) and r.lr == 1.0 and isinstance(r.lr, float)
    assert r.iterations is None and r.nesterov is False and r.model_kwargs == {"shortcut": "B"}
    assert r.amp_dtype == "float16" and r.train_subset == 64
    assert get_recipe("wrn").lr == 0.1  # frozen original untouched


def test_a_literal_choice_named_none_is_the_string_not_none():
    assert apply_overrides(get_recipe("fast-cpu"), {"tta": "none"}).tta == "none"
    assert apply_overrides(get_recipe("fast-cpu"), {"tta": "flip"}).tta == "flip"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"lrr": "0.1"}, "Did you mean: lr"),
        ({"epochs": "1.5"}, "epochs='1.5' is not an integer"),
        ({"amp_dtype": "fp8"}, "one of 'bfloat16', 'float16'"),
        ({"epochs": "0"}, "epochs must be >= 1"),
        ({"milestones": "20,10"}, "milestones must increase"),
        ({"model_kwargs": "shortcut=B"}, "JSON object"),
        ({"nesterov": True, "momentum": 0.0}, "nesterov needs optimizer 'sgd' with momentum"),
        ({"optimizer": "adamw"}, "nesterov needs optimizer 'sgd'"),  # fast-cpu uses Nesterov
        ({"lr": "fast"}, "lr='fast' is not a number"),
    ],
)
def test_bad_overrides_raise_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(get_recipe("fast-cpu"), overrides)


def test_recipe_type_is_checked_on_construction_too():
    with pytest.raises(ConfigError, match="batch_size"):
        Recipe(batch_size="128")
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_recipe("fast-cpu").lr = 1.0


def test_unknown_recipe_names_the_closest():
    with pytest.raises(ConfigError, match="paper-cifar"):
        get_recipe("paper-cifr")


def _config(argv):
    from resnets.cli import build_parser
    from resnets.commands.train import COMMAND

    config, _ = COMMAND.resolve(build_parser().parse_args(["train", *argv]))
    return config


def test_command_line_flags_then_set_override_the_recipe():
    config = _config(
        [
            "--recipe",
            "wrn",
            "--epochs",
            "3",
            "--lr",
            "0.05",
            "--no-nesterov",
            "--batch-size",
            "64",
            "--set",
            "lr=0.02",
            "--set",
            "milestones=1,2",
            "--output",
            "out",
            "--freeze-bn",
            "--set",
            "keep_last=3",
        ]
    )
    r = config.recipe
    assert (r.name, r.epochs, r.lr, r.nesterov) == ("wrn", 3, 0.02, False)
    assert r.batch_size == 64 and r.milestones == (1, 2)
    assert config.run.output == "out" and config.run.freeze_bn and config.run.keep_last == 3


def test_command_line_defaults_to_fast_cpu():
    config = _config([])
    assert config.recipe == get_recipe("fast-cpu") and config.run == RunOptions()


def test_command_line_rejects_unknown_set_keys_before_any_work():
    with pytest.raises(ConfigError, match="Did you mean: label_smoothing"):
        _config(["--set", "label_smothing=0.1"])
    with pytest.raises(ConfigError, match="unknown recipe"):
        _config(["--recipe", "fast"])


def test_derived_flags_give_the_config_the_hand_written_ones_gave():
    # timm's aliases, a --no- switch, -b, a Literal's choices, then --set on top
    config = _config(
        "--lr 0.05 --sched cosine --opt adamw --no-nesterov -b 64 --aa rand-m9-mstd0.5 "
        "--set milestones=3,6".split()
    )
    assert config.recipe == dataclasses.replace(
        get_recipe("fast-cpu"),
        lr=0.05,
        schedule="cosine",
        optimizer="adamw",
        nesterov=False,
        batch_size=64,
        auto_augment="rand-m9-mstd0.5",
        milestones=(3, 6),
    )
    assert config.run == RunOptions()
    # the new spellings are the field's names; a run field's path stays as given; switches; --set reaches runs
    config = _config(
        "--optimizer lamb --no-nesterov --auto-augment none --wd 0.01 --smoothing 0.2 --amp --no-hflip "
        "-o none --strict-data --no-verify-checksums --max-image-pixels 100 --download --set keep_last=3 "
        "--set lr=0.3".split()
    )
    r = config.recipe
    assert (r.optimizer, r.auto_augment, r.weight_decay, r.label_smoothing) == ("lamb", None, 0.01, 0.2)
    assert (r.amp, r.hflip, r.lr, r.nesterov) == (True, False, 0.3, False)
    assert config.run == RunOptions(
        output="none",
        strict_data=True,
        verify_checksums=False,
        max_image_pixels=100,
        download=True,
        keep_last=3,
    )


def test_detection_flags_are_derived_from_the_detection_recipe():
    from resnets.cli import build_parser
    from resnets.commands.detect import COMMAND
    from resnets.detection.recipes import DETECTION_RECIPES

    argv = "detect train --recipe paper-voc --backbone-weights w.pt --eval-split none -b 4 --head fpn --amp "
    argv += "--no-deterministic --set anchor_sizes=16,32 --set log_every=5"
    config, resumed = COMMAND.resolve(build_parser().parse_args(argv.split()))
    assert resumed is None
    assert config.recipe == dataclasses.replace(
        get_recipe("paper-voc", DETECTION_RECIPES),
        eval_split=None,
        batch_size=4,
        head="fpn",
        amp=True,
        deterministic=False,
        anchor_sizes=(16, 32),
    )
    assert config.run == RunOptions(init_weights="w.pt", log_every=5)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sched", "cosin"], "argument --schedule/--sched: invalid choice: 'cosin' (choose from 'step',"),
        (["--epochs", "x"], "argument --epochs: epochs='x' is not an integer"),
        (["--iterations", "none"], "argument --iterations: iterations='none' is not an integer"),
        (["--lr", "fast"], "argument --lr: lr='fast' is not a number"),
    ],
)
def test_a_bad_flag_value_fails_with_one_line_naming_the_flag(capsys, argv, message):
    from resnets.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", *argv])
    assert exit_.value.code == 2
    error = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(error) == 1 and error[0].startswith("resnets train: error: ") and message in error[0]


def test_detection_refuses_what_the_detector_cannot_use():
    from resnets.detection.recipes import DETECTION_RECIPES, DetectionRecipe

    with pytest.raises(ConfigError, match="optimizer='lamb' is not one of 'sgd', 'adamw'"):
        apply_overrides(get_recipe("fashion-cpu", DETECTION_RECIPES), {"optimizer": "lamb"})
    with pytest.raises(ConfigError, match="detection recipe 'custom': lr must be > 0; box_score_thresh"):
        DetectionRecipe(lr=0.0, box_score_thresh=1.0)  # the shared checks and the detector's, in one line
    with pytest.raises(ConfigError, match="unknown recipe 'fashion'. Did you mean: fashion-cpu"):
        get_recipe("fashion", DETECTION_RECIPES)


def test_print_config_prints_the_resolved_json(capsys):
    import json

    from resnets.cli import main

    assert main(["train", "--epochs", "2", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["recipe"]["epochs"] == 2 and printed["recipe"]["name"] == "fast-cpu"


def test_amp_auto_is_a_recipe_choice_and_other_words_are_refused():
    assert apply_overrides(get_recipe("fast-cpu"), {"amp": "auto"}).amp == "auto"
    assert apply_overrides(get_recipe("fast-cpu"), {"amp": "true"}).amp is True
    with pytest.raises(ConfigError, match="amp='maybe'"):
        apply_overrides(get_recipe("fast-cpu"), {"amp": "maybe"})


@pytest.mark.parametrize("has_bf16, expected", [(True, "bfloat16"), (False, None)])
def test_amp_auto_uses_bfloat16_only_where_the_cpu_computes_it(monkeypatch, has_bf16, expected):
    import torch

    from resnets import runtime
    from resnets.runtime import autocast_dtype

    kind = runtime.CpuKind("AVX512" if has_bf16 else "AVX2", bfloat16=has_bf16, float16=False, compiler=True)
    monkeypatch.setattr(runtime, "cpu_kind", lambda: kind)
    cpu = torch.device("cpu")
    resolved = autocast_dtype("auto", "bfloat16", cpu)
    assert resolved == (getattr(torch, expected) if expected else None)
    # explicit choices are obeyed whatever the hardware
    assert autocast_dtype(True, "bfloat16", cpu) is torch.bfloat16
    assert autocast_dtype(False, "bfloat16", cpu) is None
