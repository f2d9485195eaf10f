"""Evaluation and promotion: scoring models on the frozen test split, promotion gates, the production pointer."""
