"""``python -m fedsilo`` runs the CLI."""

from fedsilo.cli import main

if __name__ == "__main__":  # spawned workers re-import this module as __mp_main__: they must not re-run the CLI
    main()
