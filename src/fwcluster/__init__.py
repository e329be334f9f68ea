"""fwcluster: a stateful firewall that runs as a cluster of VNF instances sharing one state table."""

__version__ = "0.1.0"
