"""Quantization recovery (Zhang et al., arXiv 2410.16454): notebook 04."""
