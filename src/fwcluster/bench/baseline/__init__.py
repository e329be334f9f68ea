"""The pair operators run today, as a baseline for ``bench failover``: two nodes with the kernel's
stateful firewall, conntrackd (FTFW) and keepalived (VRRP), in namespaces of its own (``fwb-*``)."""
