"""Runtimes: where silos run (simulation today; processes, deployments and Ray build on it)."""
