"""The media tests' fixtures: ``worker`` and ``rooms`` come from tests/conftest.py."""
