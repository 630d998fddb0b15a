"""Coverage-guided fuzz targets (atheris) for every parser the network feeds.

See README.md, "Fuzzing", and ``fuzz/_common.py``.
"""
