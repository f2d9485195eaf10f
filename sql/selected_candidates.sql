-- The frames selected for review on one model-day, with their predictions, and counts of the rest: what
-- the `review_candidates` asset takes out of the warehouse (the day's detections stay there).
-- `review_candidates` (the file, inlined here) gives every flagged frame with its status; this statement
-- returns one row per selected frame, with its valid detections as an array (identical detections once:
-- streaming inserts can repeat a row, and a repeated box would be a repeated pre-annotation), then one row
-- per (status, filter_mask) of the frames not selected, with frame_uri NULL and their count in `frames`.
WITH
frame_statuses AS (
  SELECT * FROM review_candidates
),
valid_detections AS (
  SELECT * FROM checked_predictions WHERE drop_reason IS NULL
),
selected_boxes AS (
  SELECT
    d.frame_uri,
    d.class_name,
    d.score,
    d.x_min,
    d.y_min,
    d.x_max,
    d.y_max,
    COUNT(*) AS copies
  FROM valid_detections AS d
  JOIN frame_statuses AS s ON s.frame_uri = d.frame_uri AND s.status = 'selected'
  GROUP BY d.frame_uri, d.class_name, d.score, d.x_min, d.y_min, d.x_max, d.y_max
),
selected_predictions AS (
  SELECT
    frame_uri,
    ARRAY_AGG(
      -- Fields named explicitly: the emulator's translation names bare struct fields alike.
      STRUCT(
        class_name AS class_name, score AS score, x_min AS x_min, y_min AS y_min, x_max AS x_max, y_max AS y_max
      )
      ORDER BY class_name, score, x_min, y_min, x_max, y_max
    ) AS predictions,
    CAST(SUM(copies - 1) AS INT64) AS duplicate_predictions
  FROM selected_boxes
  GROUP BY frame_uri
)
SELECT
  s.frame_uri,
  s.client,
  s.camera_id,
  s.model_version,
  s.captured_at,
  s.image_width,
  s.image_height,
  s.filter_mask,
  s.best_filter_rank,
  s.reason_count,
  s.tiebreak,
  s.status,
  1 AS frames,
  p.predictions,
  IFNULL(p.duplicate_predictions, 0) AS duplicate_predictions
FROM frame_statuses AS s
LEFT JOIN selected_predictions AS p ON p.frame_uri = s.frame_uri
WHERE s.status = 'selected'
UNION ALL
SELECT
  NULL AS frame_uri,
  NULL AS client,
  NULL AS camera_id,
  NULL AS model_version,
  NULL AS captured_at,
  NULL AS image_width,
  NULL AS image_height,
  filter_mask,
  NULL AS best_filter_rank,
  NULL AS reason_count,
  NULL AS tiebreak,
  status,
  COUNT(*) AS frames,
  NULL AS predictions,
  0 AS duplicate_predictions
FROM frame_statuses
WHERE status != 'selected'
GROUP BY filter_mask, status
