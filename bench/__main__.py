"""`./dev bench [name]`: run the benchmarks (default: all)."""

from __future__ import annotations

import sys

from bench import engine, jobs_api

BENCHES = {"jobs": jobs_api.main, "engine": engine.main}

if __name__ == "__main__":
    names = sys.argv[1:] or list(BENCHES)
    for name in names:
        if name not in BENCHES:
            sys.exit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHES)}")
        BENCHES[name]()
