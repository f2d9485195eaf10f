"""The reference trainer: a small torchvision detector trained from a label version, started through
Dagster Pipes (README, Training: the trainer contract). It runs in its own environment
(docker/trainer/requirements.txt) and is never imported by the product."""
