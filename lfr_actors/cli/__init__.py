"""The ``lfr`` command line.

Exit codes: 0 success, 1 a runtime failure (with a one-line reason), 2 bad usage or bad
input files (with the file, line and what to change).

:mod:`.main` builds the parser and runs a command; each command group has its module:
:mod:`.run` (``validate``, ``up``, ``serve``, ``down``, ``demo``), :mod:`.status`,
:mod:`.models`, :mod:`.evaluate`, :mod:`.tokens`, :mod:`.governance` (``deployments``,
``audit``, ``retention``) and :mod:`.store`; :mod:`.common` holds what they share. Each
command imports what it needs when it runs, so ``lfr --help`` and ``lfr validate`` start
without loading ONNX Runtime or Ray.
"""

from __future__ import annotations

from lfr_actors.cli.main import main

__all__ = ["main"]
