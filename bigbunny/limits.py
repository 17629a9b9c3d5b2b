"""Sizes the memory limits count with (SPEC §6), shared by the shards that measure and the supervisor that reserves."""

from __future__ import annotations

STORE_OVERHEAD = 256  # bytes accounted per store on top of its body: a store's size is len(body) + 256
