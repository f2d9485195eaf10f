"""The training stage: launching trainers and what they write."""
