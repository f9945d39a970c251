"""Certified quantization synthesis: the search space, costs, the search, and certificates."""
