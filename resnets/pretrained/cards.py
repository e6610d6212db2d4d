"""Model cards and the registry, rendered into docs/weights.md.

The generated parts of docs/weights.md lie between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->``
markers: ``shipped`` (one card per shipped entry, from the JSON card beside its file) and ``published``
(every torchvision and timm entry). ``python -m resnets.pretrained.cards docs/weights.md`` rewrites them;
the maintainer tool that ships weights (``python -m benchmarks.ship_weights``) calls it, and a test checks
that the file equals its rendering, so docs and cards cannot disagree.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from ..errors import ConfigError
from ..io import write_text
from .registry import FILES, WeightsEntry, card_name, entries

BLOCKS = ("shipped", "published")


def render(block: str) -> str:
    """The markdown of a generated block."""
    if block == "shipped":
        return "\n".join(_card(e) for e in entries() if e.shipped).strip() + "\n"
    if block == "published":
        return _published()
    raise ConfigError(f"unknown docs block {block!r}: {', '.join(BLOCKS)}")


def rendered_docs(text: str) -> str:
    """``text`` with every generated block replaced by its current rendering."""
    for block in BLOCKS:
        pattern = re.compile(rf"(<!-- generated: {block} -->\n).*?(<!-- end: {block} -->)", re.S)
        if not pattern.search(text):
            raise ConfigError(
                f"the docs have no '<!-- generated: {block} -->' ... '<!-- end: {block} -->' block"
            )
        text = pattern.sub(lambda m, b=block: m.group(1) + render(b) + m.group(2), text)
    return text


def update_docs(path: str | os.PathLike) -> bool:
    """Rewrite the generated blocks of ``path`` (atomically); True if anything changed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    new = rendered_docs(text)
    if new != text:
        write_text(path, new)
    return new != text


def _card(entry: WeightsEntry) -> str:
    title = f"### `{entry.name}`" + (
        f" (the default of `{entry.model}`: `pretrained=True`)" if entry.default else ""
    )
    card = entry.card
    if card is None:
        return (
            f"{title}\n\nNot made yet: `{FILES.name}/{entry.file}` and its card `{card_name(entry.file)}` "
            f"are written by `python -m benchmarks.ship_weights RUN --model {entry.model} --tag {entry.tag}` "
            f"from a finished run of the recipe `{entry.metadata.get('recipe')}`.\n"
        )
    m, t = card["metrics"], card["transforms"]
    stats = ", ".join(f"{v:.4f}" for v in t["mean"]), ", ".join(f"{v:.4f}" for v in t["std"])
    rows = [
        (
            "dataset",
            f"{card['dataset']}: {card['num_classes']} classes ({', '.join(card['classes'])}), "
            f"{card['in_chans']} input channel(s)",
        ),
        (
            "test accuracy",
            f"**{m['acc@1']:.2f} %** top-1, {m['acc@5']:.2f} % top-5 on all {m['images']:,} test "
            f"images; {m['subset_acc@1']:.2f} % top-1 on the first {m['subset_images']:,} (the "
            f"test's subset); {card['evaluation']}",
        ),
        ("recipe", f"`{card['recipe']}`" + (f", changed: {card['overrides']}" if card["overrides"] else "")),
        ("command", f"`{card['command']}`"),
        (
            "trained",
            f"{card['date']}, {_duration(card['training_time_s'])} on {card['cpu']} "
            f"({card['run']['precision']}, {card['run']['epochs']} epochs; the run's own final test "
            f"error {card['run']['final_test_error']:.2f} % with test-time augmentation "
            f"`{card['run']['tta']}`)",
        ),
        (
            "preprocessing",
            f"resize {t['resize_size']}, centre crop {t['crop_size']}, {t['interpolation']}, "
            f"mean ({stats[0]}), std ({stats[1]}) (the training set's statistics)",
        ),
        (
            "file",
            f"`{entry.file}`, {card['file_size_mb']:.2f} MB, {card['params']:,} parameters, SHA-256 "
            f"`{card['sha256']}`",
        ),
        ("versions", ", ".join(f"{k} {v}" for k, v in card["versions"].items())),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"{title}\n\n| | |\n|---|---|\n{table}\n"


def _published() -> str:
    rows = [
        "| weights | source | top-1 | top-5 | resize / crop | interpolation | mean / std | licence |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries():
        if e.shipped:
            continue
        t = e.transforms
        top1, top5 = (e.metrics.get(k) for k in ("acc@1", "acc@5"))
        name = f"`{e.name}`" + "".join(f" (`{a}`)" for a in e.aliases) + (" **default**" if e.default else "")
        norm = (
            "ImageNet"
            if t.mean == (0.485, 0.456, 0.406) and t.std == (0.229, 0.224, 0.225)
            else f"{list(t.mean)} / {list(t.std)}"
        )
        rows.append(
            f"| {name} | {e.source} | {_pct(top1)} | {_pct(top5)} | {t.resize_size} / {t.crop_size} | "
            f"{t.interpolation} | {norm} | {e.metadata.get('license', '')} |"
        )
    return "\n".join(rows) + "\n"


def _pct(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resnets.pretrained.cards", description=__doc__)
    parser.add_argument("docs", nargs="?", default="docs/weights.md", help="the file to rewrite")
    args = parser.parse_args(argv)
    changed = update_docs(args.docs)
    print(f"{args.docs}: {'rewritten' if changed else 'already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
