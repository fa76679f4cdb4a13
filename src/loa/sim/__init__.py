"""Simulated providers that speak the real protocols: an SMSC and HTTP providers."""
