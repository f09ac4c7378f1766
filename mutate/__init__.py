"""Mutation testing of the critical code (`make mutate`); a tool, not part of the product."""
