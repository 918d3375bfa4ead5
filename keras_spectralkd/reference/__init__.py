"""The PyTorch reference of SpectralKD's objective (SPEC.md 2-3): an oracle for tests and the
baseline of the benchmarks. Needs torch; nothing in the package core imports it."""
