"""The `fwcluster` command line."""
