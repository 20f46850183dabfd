"""Intermediate representations: einsum level and loop level, plus one traversal toolkit."""
