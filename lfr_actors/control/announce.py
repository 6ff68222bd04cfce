"""The one line that says where a running deployment serves: its API and its console.

``lfr up`` and ``lfr demo`` print it on stdout once every actor has started, whatever the
log level (the log's ``deployment_started`` line shows only at INFO). On a terminal it is
a sentence; off one, ``lfr up``'s stdout is JSON lines (one per alert event), so there it
is a JSON object too, ``{"event": "serving", ...}``, that a reader of those lines can
pick out by its ``event`` as it picks out ``raised`` and ``updated``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lfr_actors.control.deployment import Deployment

SERVING = "serving"
"""The ``event`` of the JSON form of the line, beside the alert events' kinds."""


def serving_line(deployment_id: str, api_url: str, *, as_json: bool) -> str:
    """The line: the deployment, the API's base address and the console's address."""
    console = f"{api_url}/console"
    if as_json:
        return json.dumps(
            {"event": SERVING, "deployment": deployment_id, "api": api_url, "console": console}
        )
    return (
        f"lfr: deployment {deployment_id} is running; API {api_url}, console {console}; "
        "Ctrl-C or `lfr down FILE` stops"
    )


class Announcer:
    """Prints the serving line once, when every actor has started.

    Or before the first alert event, if that comes first: the line always leads the
    alert lines.
    """

    def __init__(self, deployment: Deployment, print_line: Callable[[str], None], *, as_json: bool):
        self.deployment = deployment
        self.print_line = print_line
        self.as_json = as_json
        self.done = False

    def __call__(self) -> None:
        """Print the line, if it was not printed yet and the API has an address."""
        url = self.deployment.live.api_url
        if self.done or url is None:
            return
        self.done = True
        self.print_line(serving_line(self.deployment.namespace, url, as_json=self.as_json))

    async def run(self) -> dict[str, Any]:
        """``deployment.run()``, printing the line as soon as every actor has started."""
        task = asyncio.create_task(self.deployment.run())
        while not self.deployment.live.actors_started and not task.done():
            await asyncio.wait({task}, timeout=0.05)
        if self.deployment.live.actors_started:
            self()
        return await task
