"""Delivery adapters: the contract, the registry and the built-in adapters."""
