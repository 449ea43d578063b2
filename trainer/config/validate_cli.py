#!/usr/bin/env python3
"""Validate a config file: ``python3 safety/config_validator.py [FILE]``.

Exit 0 when valid; 1 with one line per problem (each names the dotted key, the value and what is
allowed). Environment overrides (TRAINER__SECTION__KEY) are included, as the daemons would see them.
"""
from __future__ import annotations

import sys
from pathlib import Path

def run(file: str | None = None, base_dir: str | None = None) -> int:
    from foundation.paths import Paths
    from trainer.config.editing import check_config_file
    path = Path(file) if file else Paths.from_base(base_dir).config_file
    problems = check_config_file(path)
    if problems:
        print(f"{path}: {len(problems)} problem(s):")
        for p in problems:
            print(f"  - {p}")
        return 1
    print(f"{path}: OK")
    return 0


def main() -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?")
    ap.add_argument("--base-dir")
    a = ap.parse_args()
    return run(a.file, a.base_dir)
