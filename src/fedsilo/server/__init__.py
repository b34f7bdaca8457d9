"""The orchestrator: the round loop, silo sampling and checkpoints. Knows no transport details."""
