"""The crash detector: every crash classified, counted, and what to do about it."""
