"""The anti-stuck monitor: work that does not progress while the heartbeat is fresh (hangs)."""
