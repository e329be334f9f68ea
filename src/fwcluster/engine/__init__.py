"""The per-packet engine (sans-I/O): the one owner of the flow table, between the core and the I/O."""
