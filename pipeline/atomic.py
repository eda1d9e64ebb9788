"""Atomic file writes (temporary name, fsync, rename): see crawlers/atomic.py.

The implementation lives in the crawler package because the crawler writes atomically too and
must not import `pipeline` (pipeline builds on crawlers, never the reverse; checked by
tests/crawlers/test_layering.py). Pipeline code keeps importing it from here.
"""

from crawlers.atomic import write_bytes_atomic, write_json_atomic

__all__ = ["write_bytes_atomic", "write_json_atomic"]
