"""Synthetic warehouse data for the selection benchmark, generated inside DuckDB.

One model-day (plus a few rows of another model and of the next day, which every query must leave out)
is generated with `range()` and hash-based pseudo-random numbers, so ten million detections take seconds
and the same arguments always give the same tables. The schema is the data contract's (DESIGN.md):
`predictions`, `frames` (every inferred frame, with or without detections) and the `review_selections`
ledger with a few earlier runs, stale ones included.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from data_engine.config import FleetConfig, ModelConfig

MODEL = "municipals"
DAY = dt.date(2026, 3, 15)
CLASSES = ["PET", "Other PET", "HDPE", "Cardboard", "Film", "Metal Can"]
CLIENTS = {
    "acme_recycling": ["cam-01", "cam-02"],
    "city_mrf": ["cam-11", "cam-12", "cam-13"],
    "north_depot": ["cam-21", "cam-22", "cam-23"],
}
# A camera the config does not know: its rows are dropped as `unknown_camera`.
ROGUE_CAMERA = ("city_mrf", "cam-99")


def fleet_dict() -> dict:
    """A one-model fleet with every filter kind, scoped filters, per-filter, per-camera and per-day budgets
    (the fleet YAML's content)."""
    return {
        "warehouse": {
            "predictions_table": "bench-project.inference.predictions",
            "frames_table": "bench-project.inference.frames",
            "selections_table": "bench-project.data_engine.review_selections",
            "max_bytes_billed": 200_000_000_000,
        },
        "models": {
            MODEL: {
                "classes": CLASSES,
                "clients": {client: {"cameras": cameras} for client, cameras in CLIENTS.items()},
                "selection": {
                    "start_date": "2026-01-01",
                    "max_frames_per_day": 500,
                    "max_frames_per_camera_per_day": 100,
                    "filters": [
                        {"kind": "size_class", "classes": ["Other PET"], "min_area_fraction": 0.05},
                        {"kind": "class_overlap", "min_iou": 0.5,
                         "class_pairs": [["PET", "Other PET"], ["Film", "Cardboard"]]},
                        {"kind": "class_overlap", "name": "any_overlap_north", "min_iou": 0.4,
                         "clients": ["north_depot"], "max_frames": 200},
                        {"kind": "confidence_band", "min_score": 0.35, "max_score": 0.45, "max_frames": 300},
                        {"kind": "confidence_band", "name": "low_film_city", "min_score": 0.25, "max_score": 0.3,
                         "classes": ["Film", "HDPE"], "clients": ["city_mrf"], "cameras": ["cam-11", "cam-12"]},
                        {"kind": "size_class", "name": "big_cardboard", "classes": ["Cardboard"],
                         "min_area_fraction": 0.1, "max_area_fraction": 0.5, "cameras": ["cam-01", "cam-21"]},
                        {"kind": "empty_frames", "max_frames": 50, "clients": ["acme_recycling", "city_mrf"]},
                    ],
                },
            }
        },
    }


def fleet_config() -> FleetConfig:
    return FleetConfig.model_validate(fleet_dict())


def model_config() -> ModelConfig:
    return fleet_config().models[MODEL]


_SALTS: dict[str, int] = {}


def _h(key: str, salt: str) -> str:
    """SQL for a well-mixed UBIGINT hash of the integer SQL expression `key` and the name `salt`.

    DuckDB's multi-argument hash() combines the arguments' hashes cheaply, so hash(x, 'a') and
    hash(x, 'b') are correlated; hashing one integer (murmur finaliser) per draw keeps draws independent.
    """
    number = _SALTS.setdefault(salt, len(_SALTS) + 1)
    return f"hash(({key}) * 101 + {number})"


def _uniform(key: str, salt: str) -> str:
    """SQL for a pseudo-random double in [0, 1) determined by `key` and `salt`."""
    return f"(({_h(key, salt)} >> 11)::DOUBLE / 9007199254740992.0)"


def generate(path: Path, detections: int = 10_000_000, frames: int = 2_000_000, threads: int | None = None) -> dict[str, int]:
    """Write the benchmark tables to the DuckDB file `path` (replaced); return their row counts.

    `frames` frames carry detections (1 to 2*mean-1 each, about `detections` in all); a further fifth as
    many frames have none. About 1% of frames belong to the next day and 1% to another model; about 0.05%
    of detections are malformed, 0.05% of frames come from a camera the config does not know and 0.5% of
    the frames with detections have no row in `frames`.
    """
    import duckdb

    mean = max(1, round(detections / max(frames, 1)))
    spread = 2 * mean - 1
    empty = frames // 5
    cameras = [camera for cameras in CLIENTS.values() for camera in cameras]
    camera_list = "[" + ", ".join(f"'{c}'" for c in cameras) + "]"
    client_of = " ".join(f"WHEN '{cam}' THEN '{client}'" for client, cams in CLIENTS.items() for cam in cams)
    day_start = f"TIMESTAMPTZ '{DAY.isoformat()} 00:00:00+00'"
    path = Path(path)
    path.unlink(missing_ok=True)
    with duckdb.connect(str(path)) as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET preserve_insertion_order = false")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        # Every frame, with its detection count (0 for the empty ones) and where and when it was taken.
        con.execute(
            f"""
            CREATE TEMP TABLE frame_seed AS
            WITH base AS (
              SELECT
                f,
                CASE WHEN f < {frames} THEN 1 + ({_h('f', 'n')} % {spread})::BIGINT ELSE 0 END AS n,
                CASE WHEN {_uniform('f', 'rogue')} < 0.0005 THEN '{ROGUE_CAMERA[1]}'
                     ELSE {camera_list}[1 + ({_h('f', 'cam')} % {len(cameras)})::BIGINT] END AS camera_id,
                CASE WHEN {_uniform('f', 'where')} < 0.01 THEN 'CnD' ELSE '{MODEL}' END AS model,
                CASE WHEN {_uniform('f', 'when')} < 0.01 THEN 1 ELSE 0 END AS day_offset
              FROM range({frames + empty}) AS t(f)
            )
            SELECT
              f, n, camera_id, model,
              CASE camera_id {client_of} ELSE '{ROGUE_CAMERA[0]}' END AS client,
              'gs://wr-frames/' || model || '/' || camera_id || '/' || strftime(DATE '{DAY.isoformat()}' + day_offset, '%Y-%m-%d')
                || '/' || lpad(f::VARCHAR, 9, '0') || '.jpg' AS frame_uri,
              CASE WHEN {_uniform('f', 'ver')} < 0.9 THEN 'v12' ELSE 'v11' END AS model_version,
              {day_start} + to_days(day_offset) + to_microseconds((f * 86400000000 // {frames + empty})::BIGINT) AS captured_at,
              CASE WHEN camera_id LIKE 'cam-1%' THEN 1280 ELSE 1920 END AS image_width,
              CASE WHEN camera_id LIKE 'cam-1%' THEN 720 ELSE 1080 END AS image_height
            FROM base
            """
        )
        # The frames table lags a little behind the predictions: 0.5% of the frames with detections lack a row.
        con.execute(
            "CREATE TABLE frames AS SELECT frame_uri, client, camera_id, model, model_version, captured_at,"
            f" image_width, image_height FROM frame_seed WHERE n = 0 OR {_uniform('f', 'lost')} >= 0.005"
        )
        # Detection j of frame f. An odd j is, with probability 0.15, an overlapping box of another
        # (often confusable) class on top of detection j - 1: the base box is recomputed from the same hashes.
        con.execute(
            f"""
            CREATE TABLE predictions AS
            WITH det AS (
              SELECT fs.*, unnest(range(fs.n)) AS j FROM frame_seed AS fs WHERE fs.n > 0
            ),
            partnered AS (
              SELECT *, (j % 2 = 1 AND {_uniform('f * 64 + j', 'pair')} < 0.15) AS is_partner FROM det
            ),
            based AS (
              SELECT *, CASE WHEN is_partner THEN j - 1 ELSE j END AS jb FROM partnered
            ),
            classed AS (
              SELECT *, {_uniform('f * 64 + jb', 'cls')} AS ucls FROM based
            ),
            shaped AS (
              SELECT
                *,
                CASE WHEN ucls < 0.30 THEN 'PET' WHEN ucls < 0.40 THEN 'Other PET' WHEN ucls < 0.55 THEN 'HDPE'
                     WHEN ucls < 0.75 THEN 'Cardboard' WHEN ucls < 0.90 THEN 'Film' ELSE 'Metal Can' END AS base_class,
                (0.02 + 0.35 * pow({_uniform('f * 64 + jb', 'w')}, 2)) * image_width AS bw,
                (0.02 + 0.35 * pow({_uniform('f * 64 + jb', 'h')}, 2)) * image_height AS bh,
                {_uniform('f * 64 + jb', 'x')} AS ux,
                {_uniform('f * 64 + jb', 'y')} AS uy
              FROM classed
            ),
            boxed AS (
              SELECT
                *,
                ux * (image_width - bw) AS bx,
                uy * (image_height - bh) AS by_,
                CASE WHEN is_partner THEN ({_uniform('f * 64 + j', 'jx')} - 0.5) * 0.25 * bw ELSE 0 END AS dx,
                CASE WHEN is_partner THEN ({_uniform('f * 64 + j', 'jy')} - 0.5) * 0.25 * bh ELSE 0 END AS dy,
                {_uniform('f * 64 + j', 'score')} AS us,
                {_uniform('f * 64 + j', 'bad')} AS ubad
              FROM shaped
            ),
            clean AS (
              SELECT
                frame_uri, client, camera_id, model, model_version, captured_at, image_width, image_height,
                CASE
                  WHEN NOT is_partner THEN base_class
                  WHEN base_class = 'PET' THEN CASE WHEN us < 0.7 THEN 'Other PET' ELSE 'HDPE' END
                  WHEN base_class = 'Other PET' THEN 'PET'
                  WHEN base_class = 'Film' THEN 'Cardboard'
                  WHEN base_class = 'Cardboard' THEN 'Film'
                  ELSE 'PET'
                END AS class_name,
                CASE WHEN is_partner THEN 0.25 + 0.5 * us ELSE 0.25 + 0.75 * sqrt(us) END AS score,
                greatest(bx + dx, 0.0) AS x_min,
                greatest(by_ + dy, 0.0) AS y_min,
                least(bx + dx + bw, image_width::DOUBLE) AS x_max,
                least(by_ + dy + bh, image_height::DOUBLE) AS y_max,
                ubad
              FROM boxed
            )
            SELECT
              frame_uri, client, camera_id, model, model_version, captured_at, image_width, image_height,
              CASE WHEN ubad < 0.0001 THEN NULL WHEN ubad < 0.0002 THEN 'Glass' ELSE class_name END AS class_name,
              CASE WHEN ubad >= 0.0002 AND ubad < 0.0003 THEN 1.5
                   WHEN ubad >= 0.0003 AND ubad < 0.0004 THEN 'NaN'::DOUBLE ELSE score END AS score,
              CASE WHEN ubad >= 0.0004 AND ubad < 0.0005 THEN x_max + 1 ELSE x_min END AS x_min,
              y_min,
              x_max,
              CASE WHEN ubad >= 0.0005 AND ubad < 0.0006 THEN image_height + 10.0 ELSE y_max END AS y_max
            FROM clean
            """
        )
        # The ledger: two runs for each of the five days before (the latest run of a day counts, the earlier,
        # stale run does not), a run dated the benchmark day itself and another model's run (both ignored).
        con.execute(
            f"""
            CREATE TABLE review_selections AS
            WITH picked AS (
              SELECT frame_uri, hash(frame_uri) % 1000 AS bucket, 1 + (hash(frame_uri) // 1000 % 5)::INTEGER AS k
              FROM frame_seed
              WHERE hash(frame_uri) % 1000 < 8
            )
            SELECT
              CASE WHEN bucket = 7 THEN 'CnD' ELSE '{MODEL}' END AS model,
              CASE WHEN bucket = 6 THEN DATE '{DAY.isoformat()}' ELSE DATE '{DAY.isoformat()}' - k END AS selected_date,
              frame_uri,
              {day_start} - to_days(k - 1) + CASE WHEN bucket < 3 THEN INTERVAL 3 HOUR ELSE INTERVAL 2 HOUR END
                AS selected_at,
              'run-' || k::VARCHAR || CASE WHEN bucket < 3 THEN '-latest' ELSE '-stale' END AS run_id
            FROM picked
            """
        )
        counts = {
            name: con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
            for name in ("predictions", "frames", "review_selections")
        }
    return counts
