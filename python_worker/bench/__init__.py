"""Benchmarks that print figures: the scheduler, the push providers, the whole dispatch."""
