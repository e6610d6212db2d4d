"""TensorBoard scalars of a run (``--tensorboard``; the optional ``tensorboard`` extra), written by
the process that writes the run folder, into ``RUN/tensorboard``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError

# metrics.csv columns -> TensorBoard tags
EPOCH_TAGS = {
    "train_loss": "train/loss",
    "train_error": "train/error",
    "val_loss": "val/loss",
    "val_error": "val/error",
    "test_loss": "test/loss",
    "test_error": "test/error",
    "lr": "lr",
    "images_per_s": "train/images_per_s",
}
STEP_TAGS = {"loss": "step/loss", "error": "step/error", "lr": "step/lr", "images_per_s": "step/images_per_s"}


def check_available() -> None:
    """Fail before any work when TensorBoard was asked for but is not installed."""
    try:
        import tensorboard  # noqa: F401  (optional: only runs that ask for TensorBoard need it)
    except ImportError:
        raise ConfigError(
            "--tensorboard needs the tensorboard package: pip install 'resnets[tensorboard]' "
            "(or drop --tensorboard)"
        ) from None


class TensorBoardLog:
    def __init__(self, folder: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # optional dependency, imported on use

        # purge_step: a resumed run drops the events written after its checkpoint, as metrics.csv does
        self.writer = SummaryWriter(log_dir=str(folder / "tensorboard"), purge_step=purge_step)

    def log(self, tags: dict[str, str], record: dict[str, Any], step: int) -> None:
        for key, tag in tags.items():
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
