"""Evaluation: benchmark protocols, error-rate statistics and the plots that show them."""
