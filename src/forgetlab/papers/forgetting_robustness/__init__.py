"""Our benchmark: how robust each kind of forgetting is to relearning and 4-bit attacks (notebook 06)."""
