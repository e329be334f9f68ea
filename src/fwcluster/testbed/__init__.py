"""The testbed: network namespaces, veths and addresses on one machine; nginx and the instances.

Import the API from here: ``from fwcluster.testbed import up, down, load_state``. It lives in
``build`` (up), ``teardown`` (down), ``running`` (changes to a running testbed), ``steer``
(steering by hand), ``store_ops`` (the store from outside) and ``state`` (the state file).
"""

from fwcluster.testbed.build import up
from fwcluster.testbed.errors import TestbedError
from fwcluster.testbed.filtering import FilterMode, current_mode, set_filter_mode
from fwcluster.testbed.running import is_up, netns_exec, reconfigure, restart_instance, scale, set_mode
from fwcluster.testbed.state import DEFAULT_RUN_DIR, InstanceState, TestbedState, load_state, require_state
from fwcluster.testbed.steer import steer_buckets, steer_move, steer_spread, steer_table, steering_driver
from fwcluster.testbed.store_ops import (
    store_client_argv,
    store_kill_primary,
    store_password,
    store_ping,
    store_primary,
    store_start,
    store_stop,
)
from fwcluster.testbed.teardown import down

__all__ = [
    "DEFAULT_RUN_DIR",
    "FilterMode",
    "InstanceState",
    "TestbedError",
    "TestbedState",
    "current_mode",
    "down",
    "is_up",
    "load_state",
    "netns_exec",
    "reconfigure",
    "require_state",
    "restart_instance",
    "scale",
    "set_filter_mode",
    "set_mode",
    "steer_buckets",
    "steer_move",
    "steer_spread",
    "steer_table",
    "steering_driver",
    "store_client_argv",
    "store_kill_primary",
    "store_password",
    "store_ping",
    "store_primary",
    "store_start",
    "store_stop",
    "up",
]
