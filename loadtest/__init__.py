"""Load tests and benchmarks for mediafed (and Janus, side by side)."""
