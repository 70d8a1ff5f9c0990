"""SaLEM, salient-layer editing with MEND (Amazon, EACL 2024): notebook 05."""
