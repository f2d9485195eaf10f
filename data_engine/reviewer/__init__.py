"""The simulated reviewer of the local demo: it reviews open frames in Label Studio toward the demo's
hidden ground truth, with mistakes of its own that it journals."""

from data_engine.reviewer.session import (
    ReviewerSettings,
    ReviewerUnavailable,
    ReviewSummary,
    mistakes_path,
    read_mistakes,
    review_demo_model,
    review_open_frames,
)

__all__ = ["ReviewSummary", "ReviewerSettings", "ReviewerUnavailable", "mistakes_path", "read_mistakes", "review_demo_model", "review_open_frames"]
