"""Randomized forgetting (Zhang, Choshen & Andreas, arXiv 2409.02228): notebook 03."""
