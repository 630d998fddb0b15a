"""Durable state of one node: room mappings, calls, webhook deliveries (SQLite).

See :mod:`mediafed.store.db`.
"""

from mediafed.store.db import Bridge, CallRecord, Store, StoreError, WebhookDelivery

__all__ = ["Bridge", "CallRecord", "Store", "StoreError", "WebhookDelivery"]
