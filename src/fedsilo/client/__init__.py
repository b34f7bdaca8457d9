"""Clients: train and evaluate a model on one silo's data, framework by framework."""
