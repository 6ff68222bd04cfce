"""The face-aware controller: the one room that knows all the others.

One module per concern: :mod:`.plan` (topology -> actor specs, pure), :mod:`.registration`
(the checks before a start, the deployment's record, the watchlist file),
:mod:`.thresholds`, :mod:`.follow` (the reconcile loop), :mod:`.status`,
:mod:`.jsonl_sink` (alert events followed from the live stream's feed), and
:mod:`.deployment` (the lifecycle: start, run, drain), which composes them.
"""

from __future__ import annotations

from lfr_actors.control.deployment import Deployment
from lfr_actors.control.paths import DeploymentError, DeploymentPaths

__all__ = ["Deployment", "DeploymentError", "DeploymentPaths"]
