"""Strategies: how the server turns silos' updates into the next global model."""
