"""``fwcluster testbed up|down``."""

from __future__ import annotations

import argparse

from rich.console import Console

from fwcluster.cli.errors import UserError
from fwcluster.cli.status_cmd import require_root


def up(args: argparse.Namespace) -> int:
    from fwcluster.config import load_config
    from fwcluster.testbed.api import up as testbed_up
    from fwcluster.testbed.errors import TestbedError

    load_config(args.config)  # a broken file stops us before anything is built
    require_root("testbed up")
    try:
        state = testbed_up(args.instances, args.config)
    except TestbedError as e:
        raise UserError(str(e), code=1) from None
    Console().print(
        f"testbed up: {len(state.instances)} instance(s) "
        f"({', '.join(i.id for i in state.instances)}), "
        f"server http://{state.server_addr}/ and http://[{state.server_addr6}]/ "
        f"reachable from netns {state.client_netns}"
    )
    return 0


def down(args: argparse.Namespace) -> int:
    from fwcluster.testbed.api import down as testbed_down

    require_root("testbed down")
    testbed_down()
    Console().print("testbed down")
    return 0
