"""Daemon logging: ``logs/<name>.log`` rotated at UTC midnight, kept ``keep_days`` days.

The implementation is shared with the sidecars: ``foundation.logs``.
"""
from foundation.logs import FORMAT, close_logging, setup_logging

__all__ = ["FORMAT", "close_logging", "setup_logging"]
