"""Build the store a configuration asks for."""

from __future__ import annotations

from fwcluster.config import Config, StoreBackend
from fwcluster.statetable.memory import MemoryStore
from fwcluster.statetable.redis_store import RedisStore
from fwcluster.statetable.settings import SyncLevel
from fwcluster.statetable.store import Store
from fwcluster.storeurl import with_sentinels


class StoreConfigError(ValueError):
    """The store cannot be built from this configuration (one line, for the user)."""


def make_store(config: Config, url_override: str = "") -> Store | None:
    """None when nothing is shared (sync level none)."""
    if config.sync.level == SyncLevel.NONE:
        return None
    if config.store.backend == StoreBackend.MEMORY:
        return MemoryStore()
    # [store] sentinels + service: the URL brings only the credentials (fwcluster/storeurl.py)
    url = with_sentinels(url_override or config.store.url, config.store.sentinels, config.store.service)
    if not url:
        raise StoreConfigError("store.url is empty and no --store-url was given (the testbed passes one)")
    return RedisStore(url, timeout=max(0.2, config.store.timeout_ms / 1000 * 4))
