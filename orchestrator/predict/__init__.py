"""Using a run's snapshots: `orchestrate predict` (parent and child), the deploy net and its
preprocessing, overlays and the best-validation pictures."""
