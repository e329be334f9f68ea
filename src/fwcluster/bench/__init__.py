"""Benchmarks: the core alone, the datapath on the testbed, and (later) the study's evaluation."""
