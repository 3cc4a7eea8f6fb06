"""Seeded generators of damaged inputs, one module per family of formats, for the fuzz suites."""
