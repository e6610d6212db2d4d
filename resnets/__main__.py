"""``python -m resnets`` (what ``torchrun -m resnets train`` runs)."""

import sys

from .cli import main

sys.exit(main())
