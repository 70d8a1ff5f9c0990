"""`python -m forgetlab ...` is the `forgetlab` command (forgetlab.tool)."""
from .tool import main

main()
