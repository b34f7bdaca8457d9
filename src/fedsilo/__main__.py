"""``python -m fedsilo`` runs the CLI."""

from fedsilo.cli import main

main()
