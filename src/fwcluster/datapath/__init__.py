"""NFQUEUE I/O: packets in from the kernel, verdicts out."""
