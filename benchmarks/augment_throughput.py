"""What each augmentation and regulariser costs in training images/s: resnet20 on Fashion-MNIST
with the fast-cpu recipe at its batch of 256 (``engine.train``, images/s from steps.jsonl after the
warm-up), the standard 2-pixel crop + flip alone against the same plus one option, alternated in
rounds; the ratio is each option's median over the baseline's."""

from __future__ import annotations

from .harness import BenchOptions, Comparison, alternate, markdown_table, write_result
from .train_throughput import fast_recipe, ours_images_per_s

BASELINE = "crop + flip (no modern augmentation)"
OPTIONS = {
    BASELINE: {},
    "RandAugment (--aa rand-m9-mstd0.5)": {"auto_augment": "rand-m9-mstd0.5"},
    "TrivialAugmentWide (--aa trivialaugment)": {"auto_augment": "trivialaugment"},
    "AutoAugment (--aa v0)": {"auto_augment": "v0"},
    "random erasing (--reprob 0.25)": {"reprob": 0.25},
    "mixup (--mixup 0.2)": {"mixup": 0.2},
    "CutMix (--cutmix 1.0)": {"cutmix": 1.0},
    "repeated augmentation (--aug-repeats 3)": {"aug_repeats": 3},
    "BCE loss (--bce-loss)": {"bce_loss": True},
}


def run(opts: BenchOptions) -> str:
    warmup, steps, log_every = opts.scale(20, 4), opts.scale(60, 6), opts.scale(10, 2)
    batch = {"batch_size": opts.scale(256, 64)}  # quick: a check of the benchmark, at a quarter of the work
    contenders = {
        name: (
            lambda extra=extra: ours_images_per_s(
                "resnet20", warmup, steps, log_every, opts, **batch, **extra
            )
        )
        for name, extra in OPTIONS.items()
    }
    comparison = alternate(contenders, opts.rounds, Comparison("resnet20 images/s", higher_is_better=True))
    rows = [
        [name, comparison.median(name), comparison.median(name) / comparison.median(BASELINE)]
        for name in OPTIONS
    ]
    table = markdown_table(
        ["training option (resnet20, Fashion-MNIST, batch 256)", "images/s", "ratio to crop + flip"], rows
    )
    recipe = fast_recipe("resnet20", 1, opts, **batch)
    payload = {
        "quick": opts.quick,
        "comparison": comparison.to_dict(),
        "options": OPTIONS,
        "settings": {
            k: getattr(recipe, k) for k in ("batch_size", "channels_last", "amp", "crop_padding", "hflip")
        },
    }
    return str(write_result("augment_throughput", payload, table, opts.results_dir))
