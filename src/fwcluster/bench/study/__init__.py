"""``fwcluster bench study``: the study's evaluation rerun (runner.py) and its outputs:
results (what a measurement is), summary and ratios, goals, the report (markdown, plots, CSV) and
the schema check. Everything but runner.py is pure: no testbed, no network, no clocks."""
