"""The silo side: what runs inside a hospital, next to its data."""
