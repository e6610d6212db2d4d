"""The augmentation-cost benchmark measures what it names: each contender is the baseline recipe with
its one option (and the batch of 256) applied, and a quick run gives a row per option."""

import json
import math

from benchmarks import augment_throughput
from benchmarks.harness import BenchOptions
from benchmarks.train_throughput import fast_recipe


def test_each_contender_is_the_baseline_with_its_option():
    base = fast_recipe("resnet20", 5, BenchOptions())
    for extra in augment_throughput.OPTIONS.values():
        recipe = fast_recipe("resnet20", 5, BenchOptions(), batch_size=256, **extra)
        assert recipe.batch_size == 256 and (recipe.crop_padding, recipe.hflip) == (2, True)
        assert all(getattr(recipe, key) == value for key, value in extra.items())
        changed = {k for k in vars(base) if getattr(base, k) != getattr(recipe, k)}
        assert changed <= {"batch_size", *extra}


def test_a_quick_run_measures_every_option(tmp_path):
    augment_throughput.run(BenchOptions(quick=True, rounds=1, results_dir=tmp_path))
    result = json.loads((tmp_path / "augment_throughput.json").read_text())
    medians = result["comparison"]["median"]
    assert set(medians) == set(augment_throughput.OPTIONS)
    table = (tmp_path / "augment_throughput.md").read_text()
    rows = [line.split("|")[1:-1] for line in table.splitlines()[2:]]
    assert [r[0].strip() for r in rows] == list(augment_throughput.OPTIONS)
    assert float(rows[0][2]) == 1.0  # the baseline against itself
    assert all(math.isfinite(float(r[1])) and float(r[1]) > 0 for r in rows)
