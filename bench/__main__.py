"""`./dev bench [name]`: run the benchmarks (default: all)."""

from __future__ import annotations

import sys

from bench import appium_steps, engine, events, first_start, flows, install, jobs_api, suites, uploads

BENCHES = {
    "jobs": jobs_api.main,
    "engine": engine.main,
    "uploads": uploads.main,
    "flows": flows.main,
    "appium": appium_steps.main,
    "suites": suites.main,
    "install": install.main,
    "first-start": first_start.main,
    "events": events.main,
}

if __name__ == "__main__":
    # Arguments after a benchmark's name are its own (`./dev bench uploads 256M`).
    names = [a for a in sys.argv[1:] if a in BENCHES] or (list(BENCHES) if len(sys.argv) < 2 else sys.argv[1:2])
    for name in names:
        if name not in BENCHES:
            sys.exit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHES)}")
        BENCHES[name]()
