"""Hooks: small adapters between the loop and the pure modules, one per file."""
