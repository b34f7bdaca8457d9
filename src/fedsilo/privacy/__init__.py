"""Privacy: secure aggregation, differential privacy and accounting."""
