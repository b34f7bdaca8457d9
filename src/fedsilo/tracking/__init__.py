"""Where a run's record goes: the run folder, the console, later MLflow and the HTML report."""
