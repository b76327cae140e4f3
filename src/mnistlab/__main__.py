"""`python -m mnistlab` runs the CLI."""

from mnistlab.cli import main

main()
