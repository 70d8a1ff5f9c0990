"""Neuroplasticity (Lo, Cohen & Barez, arXiv 2401.01814): notebook 02."""
