"""Methods that more than one paper uses: selective pruning, gradient unlearning (GA, NPO, GDR, KLR, SURE),
weight quantization, the MUSE evaluation."""
