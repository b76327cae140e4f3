"""`python -m mnistlab` runs the CLI."""

from mnistlab.cli.app import main

main()
