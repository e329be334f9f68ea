"""The shared state table: local replica, sync policy and store backends."""
