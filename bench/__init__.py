"""Load and end-to-end benchmarks (DESIGN §9), run by `make bench` (`python -m bench`)."""
