"""``python -m lfr_actors.cli``: the ``lfr`` command."""

from __future__ import annotations

import sys

from lfr_actors.cli.main import main

sys.exit(main())
