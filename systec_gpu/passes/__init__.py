"""Symmetry passes: each a pure function from one IR value to the next, in its own module."""
