"""``python -m controller.cli``: the ``kitpin`` console script."""

from __future__ import annotations

import sys

from controller.cli.app import main

sys.exit(main())
