"""Test hosts for libwebrtc clients: loadtest/testhost.py, shared with the load test."""

from loadtest.testhost import TestHost, TestHostError

__all__ = ["TestHost", "TestHostError"]
