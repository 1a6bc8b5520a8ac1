"""``python -m ddad_jax.export``: see ``cli.py``."""

import sys

from ddad_jax.export.cli import main

sys.exit(main())
