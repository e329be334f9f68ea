"""The pure firewall core: bytes and time in, decision out. No sockets, no clocks, no store."""
