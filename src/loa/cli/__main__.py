"""`python -m loa.cli`: the `loa` command."""

from loa.cli import main

main()
