"""The CLI's side of the admin API: find the local testbed's masters (leader first) or use the one
given with ``--api URL --token T``, and turn every refusal into a one-line :class:`UserError`.

By default the CLI talks to the masters over their Unix sockets (``<run>/<id>.api.sock``); over the
network it works from a namespace that reaches them, e.g.
``ip netns exec fwc-mgmt fwcluster --api http://198.18.255.1:9301 ...``.
"""

from __future__ import annotations

from typing import Any

from fwcluster.cli.errors import UserError
from fwcluster.control.client import AdminCallError, Endpoint
from fwcluster.control.client import call as call_masters


def local_endpoints() -> list[Endpoint]:
    """The local testbed's masters, the one that says it leads first."""
    from fwcluster.testbed.masters import api_sockets
    from fwcluster.testbed.state import load_state

    state = load_state()
    if state is None:
        raise UserError("no testbed is up (run: fwcluster testbed up)", code=1)
    if not state.masters:
        raise UserError("the testbed runs no masters ([cluster] masters = 0): there is no admin API", code=1)
    return [Endpoint(p) for p in api_sockets(state)]


def call(
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    api: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """Ask the leader (or the one ``api`` master); the answer, or a one-line UserError."""
    try:
        endpoints = [Endpoint(api, token)] if api else local_endpoints()
        return call_masters(endpoints, method, path, body)
    except AdminCallError as e:
        raise UserError(str(e), code=2 if 400 <= e.status < 500 else 1) from None
