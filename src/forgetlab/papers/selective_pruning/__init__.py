"""Selective pruning (Pochinkov & Schoots, arXiv 2403.01267): notebook 01 (`experiment`) and notebook 01b, the
vision and toxicity experiments (`vision`, `toxicity`, `vision_toxicity`)."""
