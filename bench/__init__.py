"""The project's benchmarks (docs/performance.md): `python -m bench` or `./scripts/bench`."""
