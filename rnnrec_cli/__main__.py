"""`python -m rnnrec_cli`: the `rnnrec` command."""

from rnnrec_cli.cli.app import main

main()
