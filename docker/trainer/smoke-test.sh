#!/usr/bin/env bash
# The trainer image's smoke test (README "Deployment smoke test"; docker/smoke-test.sh runs it last):
# builds docker/trainer/Dockerfile with Podman, then runs the image's entrypoint on a tiny synthetic COCO
# set on the CPU: `train` (two short epochs: checkpoints, checkpoints.json with COCO metrics) and
# `evaluate` (detections of both checkpoints, clean and blurred), through the trainer contract's
# `--extras` files, and checks what they wrote. Prints each step's time. Not part of `pytest`.
#
# Environment:
#   BASE_IMAGE       a local Debian bookworm image (default localhost/debian:bookworm; made on first use)
#   TORCH_INDEX_URL  where torch comes from (Dockerfile). Default here: the wheels on this host's disk
#                    (TRAINER_WHEELS, default /opt/pypi-more, a PEP 503 index with torch 2.14.1; mounted
#                    into the build), else PyPI. Production: leave the Dockerfile's default (CUDA 12.6).
#   TRAINER_IMAGE    the tag to build (default localhost/data-engine-trainer:smoke)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export BASE_IMAGE="${BASE_IMAGE:-localhost/debian:bookworm}"
export BUILDAH_FORMAT=docker
if [[ -z "${CONTAINERS_CONF:-}" && ! -e /etc/containers/containers.conf ]]; then
    export CONTAINERS_CONF="$here/../podman/containers.conf"
fi
image="${TRAINER_IMAGE:-localhost/data-engine-trainer:smoke}"
wheels="${TRAINER_WHEELS:-/opt/pypi-more}"
build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
if [[ -n "${TORCH_INDEX_URL+set}" ]]; then
    build_args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
elif [[ -d "$wheels/simple/torch" ]]; then
    build_args+=(--build-arg "TORCH_INDEX_URL=file://$wheels/simple" -v "$wheels:$wheels:ro")
else
    build_args+=(--build-arg "TORCH_INDEX_URL=")  # PyPI's torch (CUDA 13; about 3 GB to download)
fi

work="$(mktemp -d)"
chmod 0777 "$work"  # the image's user (uid 10001) writes the run folder and detections here
step_start=$SECONDS
total_start=$SECONDS
step() {
    if [[ -n "${step_name:-}" ]]; then printf '%-52s %4ds\n' "  trainer: $step_name" $((SECONDS - step_start)); fi
    step_name="$1"; step_start=$SECONDS
    [[ -n "$step_name" ]] && echo "==> trainer: $step_name" >&2 || true
}
finish() {
    local status=$?
    step ""
    rm -rf "$work"
    printf '%-52s %4ds\n' "  trainer: total" $((SECONDS - total_start))
    [[ $status -eq 0 ]] && echo "trainer smoke test PASSED" || echo "trainer smoke test FAILED in step: ${step_name:-?}"
    exit $status
}
trap finish EXIT
# The image on the CPU, two torch threads, the work folder at /data; --rm leaves no container behind.
trainer() { podman run --rm -e OMP_WAIT_POLICY=PASSIVE -v "$work:/data" "$@"; }

step "base image ($BASE_IMAGE)"
podman image exists "$BASE_IMAGE" || "$here/../podman/make-base-image.sh" "$BASE_IMAGE"

step "build the trainer image"
podman build --format docker -f "$here/Dockerfile" "${build_args[@]}" -t "$image" "$here" >"$work/build.log" 2>&1 \
    || { tail -40 "$work/build.log" >&2; exit 1; }
podman images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' "$image" >&2

step "write a tiny COCO set (60 frames)"
trainer -i --entrypoint python3 "$image" - <<'PY'
"""60 frames of 96x72 pixels, one or two coloured rectangles each (a class per colour); 40 train, 20 val."""
import json, random
from pathlib import Path
from PIL import Image, ImageDraw

rng, colours = random.Random(0), {"PET": (220, 40, 40), "Can": (40, 60, 220)}
classes = list(colours)
Path("/data/frames").mkdir()
images, annotations, splits = [], [], {}
for index in range(60):
    path = f"/data/frames/{index:03d}.png"
    image = Image.new("RGB", (96, 72), (130, 130, 130))
    for _ in range(rng.randint(1, 2)):
        name, width, height = rng.choice(classes), rng.randint(14, 30), rng.randint(14, 30)
        x, y = rng.randint(0, 96 - width), rng.randint(0, 72 - height)
        ImageDraw.Draw(image).rectangle([x, y, x + width - 1, y + height - 1], fill=colours[name])
        annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": classes.index(name) + 1,
                            "bbox": [x, y, width, height], "area": width * height, "iscrowd": 0})
    image.save(path)
    images.append({"id": index + 1, "file_name": path, "width": 96, "height": 72})
    splits[path] = "train" if index % 3 else "val"
Path("/data/labels").mkdir()
coco = {"images": images, "annotations": annotations, "categories": [{"id": i + 1, "name": n} for i, n in enumerate(classes)]}
Path("/data/labels/annotations.json").write_text(json.dumps(coco))
Path("/data/splits.json").write_text(json.dumps(splits))
Path("/data/train.json").write_text(json.dumps({
    "model": "toy", "classes": classes, "label_version": "smoke", "label_version_uri": "/data/labels",
    "splits_uri": "/data/splits.json", "run_uri": "/data/run", "initial_weights_uri": None,
    "hyperparameters": {"epochs": 2, "batch_size": 4, "min_size": 72, "max_size": 96, "threads": 2, "seed": 0},
}))
PY

step "train: 2 epochs on the CPU"
trainer "$image" train --extras /data/train.json | tee "$work/train.log" >&2
python3 - "$work" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
entries = json.loads((work / "run/checkpoints.json").read_text())
assert [e["epoch"] for e in entries] == [1, 2], entries
assert all((work / "run/checkpoints" / e["name"]).is_file() for e in entries), "a checkpoint file is missing"
assert all({"map", "map50", "mar_100"} <= e["metrics"].keys() for e in entries), entries[0]["metrics"]
frames = [path for path, split in json.loads((work / "splits.json").read_text()).items() if split == "val"]
(work / "evaluate.json").write_text(json.dumps({
    "checkpoint_uris": [e["uri"] for e in entries], "frames": frames, "output_uri": "/data/evaluation",
    "perturbations": [{"name": "blur", "kind": "blur", "strength": 1.5}],
}))
PY
grep -q '"materialization"' "$work/train.log" || { echo "train reported no materialization" >&2; exit 1; }

step "evaluate: both checkpoints, clean and blurred"
trainer "$image" evaluate --extras /data/evaluate.json >&2
python3 - "$work" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
index = json.loads((work / "evaluation/detections.json").read_text())
assert [(e["checkpoint_uri"].rsplit("/", 1)[1], e["perturbation"]) for e in index] == [
    ("epoch-0001.pt", None), ("epoch-0001.pt", "blur"), ("epoch-0002.pt", None), ("epoch-0002.pt", "blur")], index
for entry in index:
    detections = json.loads((work / "evaluation" / Path(entry["detections_uri"]).name).read_text())
    assert len(detections["images"]) == 20 and [c["name"] for c in detections["categories"]] == ["PET", "Can"]
    assert len(detections["annotations"]) == entry["detections"]
    assert all("score" in a for a in detections["annotations"])
PY

step "imports of the Pipes launch path"
trainer --entrypoint python3 "$image" -c "import boto3, dagster_pipes, data_engine_trainer.__main__" >&2
