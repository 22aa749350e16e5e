"""Evaluation: proper scores, calibration error, reliability curves, bootstrap intervals (pure), and their plots."""
