"""Contracts: LabelSpec (what "up" means), FeatureSpec (causal features, fitted normalization), time splits with purge and embargo. Pure functions; imports only data."""
