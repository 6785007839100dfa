"""Prediction on the original grid, metrics, per-subject membership signals and the audit."""
