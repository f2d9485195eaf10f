"""A stand-in for the reference trainer that follows the trainer contract's evaluate entrypoint without
torch: its "checkpoints" are JSON files holding the boxes the model predicts per frame (clean, and per
perturbation), so the evaluation tests run the real launcher and Dagster Pipes in seconds."""
