"""The management layer: masters (leader lease with a fencing epoch), health, failover."""
