"""Matching: similarity of templates, and thresholds set by target false-match rate."""
