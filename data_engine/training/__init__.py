"""The training stage: launching trainers (AWS Batch jobs, the reference trainer's local environment) and
what they write (the model store: runs, checkpoints, candidates), and checkpoint selection. Plain Python;
the Dagster layer is data_engine.defs.training and the launchers in data_engine.defs."""

from data_engine.training.selection import SelectionError, candidate_record, select_checkpoint
from data_engine.training.store import ModelStore, ModelStoreError, model_store_uri

__all__ = ["ModelStore", "ModelStoreError", "SelectionError", "candidate_record", "model_store_uri", "select_checkpoint"]
