"""The `train` entrypoint: one training run from a label version into a run folder of the model store.

Writes `<run_uri>/checkpoints/epoch-NNNN.pt` after each epoch, validated on the val split, with the
entries so far in `<run_uri>/progress.json`; `<run_uri>/checkpoints.json` goes last (DESIGN.md, Model
store). A Batch retry (`AWS_BATCH_JOB_ATTEMPT` > 1) resumes after the last checkpoint in progress.json.
"""

from __future__ import annotations

import io
import json
import os
import time
from typing import Any

import torch

from data_engine_trainer import storage
from data_engine_trainer.data import DetectionDataset, collate, load_json, split_images, targets_by_image
from data_engine_trainer.distributed import Processes
from data_engine_trainer.metrics import coco_metrics
from data_engine_trainer.model import build_detector
from data_engine_trainer.predict import categories, coco_detections, predict
from data_engine_trainer.reporting import Reporter

DEFAULT_HYPERPARAMETERS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 4,  # per process
    "learning_rate": 0.001,
    "weight_decay": 0.0001,
    "width": 32,  # backbone channels; the detector's size
    "head_convs": 4,  # convolutions in each FCOS head tower (torchvision's default); fewer train faster
    "min_size": 240,  # images are resized to these bounds (torchvision GeneralizedRCNNTransform)
    "max_size": 320,
    "seed": 0,
    "threads": 0,  # torch CPU threads per process; 0 leaves torch's default
}


def hyperparameters_of(extras: dict[str, Any]) -> dict[str, Any]:
    given = extras.get("hyperparameters") or {}
    unknown = sorted(set(given) - set(DEFAULT_HYPERPARAMETERS))
    if unknown:
        raise ValueError(f"unknown hyperparameters {unknown}; the reference trainer takes {sorted(DEFAULT_HYPERPARAMETERS)}")
    return {**DEFAULT_HYPERPARAMETERS, **given}


def validation_truth(coco: dict[str, Any], images: list[dict[str, Any]], classes: list[str]) -> dict[str, Any]:
    """The val split as COCO ground truth, its categories numbered like the detector's labels."""
    ids = {image["id"] for image in images}
    label_of = {category["id"]: classes.index(category["name"]) + 1 for category in coco["categories"]}
    annotations = [
        {
            **annotation,
            "category_id": label_of[annotation["category_id"]],
            "area": annotation.get("area") or annotation["bbox"][2] * annotation["bbox"][3],
            "iscrowd": annotation.get("iscrowd", 0),
        }
        for annotation in coco["annotations"]
        if annotation["image_id"] in ids
    ]
    return {"images": images, "annotations": annotations, "categories": categories(classes)}


def checkpoint_bytes(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_checkpoint(uri: str, device: torch.device) -> dict[str, Any]:
    return torch.load(io.BytesIO(storage.read_bytes(uri)), map_location=device, weights_only=True)


def train(extras: dict[str, Any], reporter: Reporter, processes: Processes) -> None:
    started = time.monotonic()
    hyperparameters = hyperparameters_of(extras)
    if hyperparameters["threads"]:
        torch.set_num_threads(int(hyperparameters["threads"]))
    torch.manual_seed(int(hyperparameters["seed"]))
    classes: list[str] = extras["classes"]
    run_uri: str = extras["run_uri"]
    progress_uri = storage.join(run_uri, "progress.json")

    coco = load_json(storage.join(extras["label_version_uri"], "annotations.json"))
    splits = load_json(extras["splits_uri"])
    train_images, val_images = split_images(coco, splits, "train"), split_images(coco, splits, "val")
    if not train_images or not val_images:
        raise ValueError(
            f"the label version has {len(train_images)} train and {len(val_images)} val images; training needs both"
            " (more frames, or other labels.split_ratios)"
        )
    targets = targets_by_image(coco, classes)
    device = processes.device
    model = build_detector(len(classes), hyperparameters).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(hyperparameters["learning_rate"]), weight_decay=float(hyperparameters["weight_decay"])
    )

    entries: list[dict[str, Any]] = []
    attempt = int(os.environ.get("AWS_BATCH_JOB_ATTEMPT", "1"))
    if attempt > 1 and storage.exists(progress_uri):
        entries = load_json(progress_uri)
    if entries:
        state = load_checkpoint(entries[-1]["uri"], device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        reporter.log(f"attempt {attempt}: resuming after {entries[-1]['name']} (epoch {entries[-1]['epoch']})")
    elif extras.get("initial_weights_uri"):
        state = load_checkpoint(extras["initial_weights_uri"], device)
        model.load_state_dict(state.get("model", state))
        reporter.log(f"starting from the weights at {extras['initial_weights_uri']}")
    first_epoch = entries[-1]["epoch"] + 1 if entries else 1
    step = entries[-1]["step"] if entries else 0

    trainable = model if processes.world_size == 1 else torch.nn.parallel.DistributedDataParallel(model)
    train_set = DetectionDataset(train_images, targets, extras.get("frames_root"))
    sampler = torch.utils.data.DistributedSampler(
        train_set, num_replicas=processes.world_size, rank=processes.rank, shuffle=True, seed=int(hyperparameters["seed"])
    )
    loader = torch.utils.data.DataLoader(train_set, batch_size=int(hyperparameters["batch_size"]), sampler=sampler, collate_fn=collate)
    if processes.is_main:
        val_set = DetectionDataset(val_images, targets, extras.get("frames_root"))
        truth = validation_truth(coco, val_images, classes)
    epochs = int(hyperparameters["epochs"])
    for epoch in range(first_epoch, epochs + 1):
        epoch_started = time.monotonic()
        sampler.set_epoch(epoch)
        trainable.train()
        losses = []
        for images, batch_targets in loader:
            images = [image.to(device) for image in images]
            batch_targets = [{key: value.to(device) for key, value in target.items()} for target in batch_targets]
            loss = sum(trainable(images, batch_targets).values())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            losses.append(loss.item())
            step += 1
        if processes.is_main:
            outputs = predict(model, val_set.pixels, device, int(hyperparameters["batch_size"]))
            metrics = coco_metrics(truth, coco_detections([image["id"] for image in val_images], outputs))
            name = f"epoch-{epoch:04d}.pt"
            uri = storage.join(run_uri, "checkpoints", name)
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch,
                "step": step,
                "classes": classes,
                "hyperparameters": hyperparameters,
            }
            storage.write_bytes(uri, checkpoint_bytes(state))
            entry = {"name": name, "uri": uri, "epoch": epoch, "step": step, "metrics": metrics}
            entries.append(entry)
            storage.write_bytes(progress_uri, json.dumps(entries, indent=2).encode())
            reporter.log(
                f"epoch {epoch}/{epochs}: loss {sum(losses) / max(len(losses), 1):.4f} over {len(losses)} steps"
                f" in {time.monotonic() - epoch_started:.1f}s; val map {metrics['map']:.4f}, map50 {metrics['map50']:.4f}"
            )
            reporter.message({"type": "checkpoint", **entry})
        processes.barrier()

    if processes.is_main:
        storage.write_bytes(storage.join(run_uri, "checkpoints.json"), json.dumps(entries, indent=2).encode())
        reporter.finish(
            {
                "epochs": epochs,
                "resumed_after_epoch": first_epoch - 1,
                "steps": step,
                "processes": processes.world_size,
                "gpus": processes.world_size if device.type == "cuda" else 0,
                "device": device.type,
                "train_images": len(train_images),
                "val_images": len(val_images),
                "checkpoints": len(entries),
                "training_seconds": round(time.monotonic() - started, 1),
            }
        )
