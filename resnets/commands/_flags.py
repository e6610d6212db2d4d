"""Command-line flags derived from settings dataclasses (recipes, ``RunOptions``).

A ``Flag`` names the field it sets and holds only what the field's type does not say: the help text, other
spellings (timm's ``--aa``, ``--wd`` ...) and whether a boolean is a one-way switch. The flag's name, its
action, choices and parser come from the field: ``--field-name``; a boolean is ``--x/--no-x`` (or a
``store_true`` switch); a ``Literal`` lists its choices; a string (a name, a path) stays as given; any other
type is parsed by ``train.recipes.convert``, as ``--set`` parses it, less None: ``--iterations none`` is
refused, ``--set iterations=none`` clears it. Every flag's ``dest`` is its field and its default None (not
given), so the given flags are the namespace's non-None field values.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ConfigError
from ..train.recipes import convert


@dataclass(frozen=True)
class Flag:
    """A command-line flag for one settings field."""

    field: str
    help: str | None = None
    aliases: tuple[str, ...] = ()  # other spellings: timm's --aa, --wd, --sched, --opt, -b, ...
    metavar: str | None = None
    switch: bool = False  # a boolean that the flag only turns on (store_true): no --no-x
    name: str | None = None  # the flag's own name where it is not the field's (--backbone-weights)

    @property
    def option(self) -> str:
        return "--" + (self.name or self.field).replace("_", "-")


def add_flags(group: argparse._ActionsContainer, flags: Iterable[Flag], hints: Mapping[str, Any]) -> None:
    """Add each flag to ``group``, typed by its field's type in ``hints`` (field name -> type)."""
    for flag in flags:
        group.add_argument(flag.option, *flag.aliases, **_argument(flag, hints[flag.field]))


def given(args: argparse.Namespace, fields: Iterable[str]) -> dict[str, Any]:
    """The values of the flags given for ``fields`` (those left at None were not given)."""
    return {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}


def _argument(flag: Flag, tp: Any) -> dict[str, Any]:
    """``add_argument``'s keywords for a field of type ``tp``."""
    kwargs: dict[str, Any] = {"dest": flag.field, "default": None, "help": flag.help}
    if flag.metavar:
        kwargs["metavar"] = flag.metavar
    alternatives = _alternatives(tp)  # a flag gives a value: None is what --set can give
    if bool in alternatives:  # bool, bool | None, bool | Literal["auto"]: "auto" only through --set
        kwargs["action"] = "store_true" if flag.switch else argparse.BooleanOptionalAction
    elif len(alternatives) == 1 and typing.get_origin(alternatives[0]) is Literal:
        kwargs["choices"] = typing.get_args(alternatives[0])
    elif alternatives != (str,):  # a name or a path stays as given
        kwargs["type"] = _parser(alternatives[0] if len(alternatives) == 1 else tp, flag.field)
    return kwargs


def _alternatives(tp: Any) -> tuple[Any, ...]:
    """The types a value may have, None left out: ``int | None`` -> ``(int,)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return tuple(a for a in typing.get_args(tp) if a is not type(None))
    return (tp,)


def _parser(tp: Any, field: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return convert(text, tp, field)
        except ConfigError as exc:  # argparse's one line: "argument --epochs: epochs='x' is not an integer"
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = field  # what argparse would name in its own messages
    return parse
