"""`python -m invoiceiq` runs the CLI."""

from invoiceiq.cli import main

main()
