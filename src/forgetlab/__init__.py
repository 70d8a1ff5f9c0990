"""forgetlab."""
