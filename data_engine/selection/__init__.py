"""Choosing the frames worth a human review: filters compiled to warehouse SQL, budgets, de-duplication."""
