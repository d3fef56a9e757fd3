"""Benchmarks of the kit (not tests): `python -m bench --help`, or `make bench`."""
