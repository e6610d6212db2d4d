"""The training commands' config: one resolution for ``resnets train``, ``resnets detect train`` and
``resnets segment train``.

A command gives its config type (``TrainConfig``, ``DetectionConfig``), its recipes, its training function
and which fields get a flag of their own (``_flags.Flag``, grouped as ``--help`` shows them). The config is
the named recipe (or the resumed run's config), then the flags, then ``--set key=value``, which reaches every
recipe and run field. Recipe flags and ``--set`` values are parsed by the field's type; run flags (paths,
names) are taken as given. On ``--resume`` the checkpoint is read here, once, and handed to the training
loop with the config.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Self

from ..errors import CheckpointError, ConfigError, unknown_name
from ..runs import Resumed, read_for_resume, run_folder_of
from ..train.recipes import Optimization, RunOptions, apply_overrides, field_types, get_recipe
from ._common import parse_set_args
from ._flags import Flag, add_flags, given


class RunConfig(Protocol):
    """What the training commands resolve: ``TrainConfig`` or ``detection.recipes.DetectionConfig``."""

    recipe: Any
    run: RunOptions

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self: ...

    def to_json(self) -> str: ...


@dataclass(frozen=True)
class TrainingCommand:
    """How one training command builds its config from the command line, and runs it."""

    config: type[RunConfig]
    recipes: Mapping[str, Optimization]
    default_recipe: str
    train: Callable[[Any, Resumed | None], dict[str, Any]]  # (config, resumed) -> the run's summary
    groups: Mapping[str, tuple[Flag, ...]]  # argument groups by title; "recipe" also gets --recipe and --set
    set_example: str  # for --set's help, e.g. "milestones=30,60"
    # a parser shared with another command (segment train: FCN/DeepLabV3's and Mask R-CNN's): the other's
    # recipes and when its default applies, for --recipe's help, and the types of the flags both read where
    # their fields' types differ
    other_recipes: tuple[str, ...] = ()
    other_default: str = ""  # e.g. "mask-rcnn-fashion-cpu with --model mask_rcnn"
    flag_types: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def recipe_type(self) -> type[Optimization]:
        return field_types(self.config)["recipe"]

    def configure(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("recipe")
        group.add_argument(
            "--recipe",
            metavar="NAME",
            help=f"{', '.join([*self.recipes, *self.other_recipes])} (default: {self.default_recipe}"
            f"{f', {self.other_default}' if self.other_default else ''}, or the resumed run's recipe)",
        )
        group.add_argument(
            "--set",
            dest="set_items",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"override any recipe or run field, e.g. --set {self.set_example} (repeatable)",
        )
        group.add_argument(
            "--print-config", action="store_true", help="print the resolved config as JSON and exit"
        )
        hints = {**field_types(self.recipe_type), **field_types(RunOptions), **self.flag_types}
        for title, flags in self.groups.items():
            add_flags(group if title == "recipe" else parser.add_argument_group(title), flags, hints)

    def resolve(
        self, args: argparse.Namespace, resumed: Resumed | None = None
    ) -> tuple[RunConfig, Resumed | None]:
        """The config (the recipe or the resumed run's, then the flags, then --set), and the checkpoint
        that ``--resume`` names, read once (None without --resume; ``resumed``: already read)."""
        recipe_fields = set(field_types(self.recipe_type)) - {"name"}
        run_fields = set(field_types(RunOptions))
        sets = parse_set_args(args.set_items)
        unknown = [key for key in sets if key not in recipe_fields | run_fields]
        if unknown:
            raise unknown_name(f"{self.recipe_type.KIND} field", unknown[0], recipe_fields | run_fields)
        named = get_recipe(args.recipe, self.recipes) if args.recipe else None
        if resumed is None and args.resume:
            resumed = read_for_resume(args.resume)
        if resumed is None:
            recipe = named or get_recipe(self.default_recipe, self.recipes)
            run = RunOptions()
        else:  # the run as it was configured; flags given now override it (e.g. more --epochs)
            base = self._config_of(resumed)
            recipe = named or base.recipe
            # the checkpoint holds the weights: starting weights (--init-weights) no longer apply
            run = dataclasses.replace(
                base.run, init_weights=None, resume=args.resume, output=str(run_folder_of(args.resume))
            )
        recipe = apply_overrides(recipe, {**given(args, recipe_fields), **_only(sets, recipe_fields)})
        run = apply_overrides(dataclasses.replace(run, **given(args, run_fields)), _only(sets, run_fields))
        return self.config(recipe=recipe, run=run), resumed

    def run(self, args: argparse.Namespace, resumed: Resumed | None = None) -> int:
        """Print the config (--print-config) or train; the exit status. ``resumed``: the checkpoint of
        ``--resume``, where the caller has read it already."""
        config, resumed = self.resolve(args, resumed)
        if args.print_config:
            print(config.to_json())
            return 0
        result = self.train(config, resumed)
        if result.get("interrupted"):  # a resumable checkpoint was saved; the shell's code for the signal
            return 128 + int(result["interrupted"])
        return 0

    def _config_of(self, resumed: Resumed) -> RunConfig:
        """The resumed run's config; a crafted or damaged checkpoint: a CheckpointError naming the file."""
        try:
            return self.config.from_dict(resumed.checkpoint["config"])
        except KeyError:
            raise CheckpointError(f"checkpoint {resumed.path} holds no run config to resume") from None
        except ConfigError as exc:
            raise CheckpointError(f"checkpoint {resumed.path} holds no usable run config: {exc}") from None


def _only(values: Mapping[str, Any], fields: set[str]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if key in fields}
