-- Frames worth reviewing for one model-day. Each configured filter (a fragment in sql/filters/) flags
-- frames; the `flagged` CTE below is replaced by the union of the configured filters when the query is
-- built. Frames selected on an earlier day are excluded, then per-filter, per-camera and per-day budgets
-- are applied in a deterministic priority order: first configured filter first, then frames flagged by
-- more filters, then a hash of the frame URI (a stable pseudo-random order).
-- Returns every flagged frame with its `status`, so that dropped frames can be counted.
WITH
detections AS (
  SELECT * FROM checked_predictions WHERE drop_reason IS NULL
),
empty_frames AS (
  SELECT * FROM checked_empty_frames WHERE drop_reason IS NULL
),
flagged AS (
  -- Placeholder with the shape of a compiled filter: frame_uri, reason, filter_rank, filter_budget.
  SELECT frame_uri, 'none' AS reason, 0 AS filter_rank, CAST(NULL AS INT64) AS filter_budget FROM detections WHERE FALSE
),
latest_selection_runs AS (
  SELECT selected_date, MAX(selected_at) AS selected_at
  FROM review_selections
  WHERE model = @model AND selected_date < @day
  GROUP BY selected_date
),
previously_selected AS (
  SELECT DISTINCT s.frame_uri
  FROM review_selections AS s
  JOIN latest_selection_runs AS r
    ON s.selected_date = r.selected_date AND s.selected_at = r.selected_at
  WHERE s.model = @model
),
day_frames AS (
  -- Frame attributes of the flagged frames only (a frame's detections all carry them).
  SELECT
    frame_uri,
    MIN(client) AS client,
    MIN(camera_id) AS camera_id,
    MIN(model_version) AS model_version,
    MIN(captured_at) AS captured_at,
    MIN(image_width) AS image_width,
    MIN(image_height) AS image_height
  FROM detections
  WHERE frame_uri IN (SELECT frame_uri FROM flagged)
  GROUP BY frame_uri
  UNION ALL
  SELECT frame_uri, client, camera_id, model_version, captured_at, image_width, image_height
  FROM empty_frames
  WHERE frame_uri IN (SELECT frame_uri FROM flagged)
),
hits AS (
  SELECT
    fl.frame_uri,
    fl.reason,
    fl.filter_rank,
    fl.filter_budget,
    ps.frame_uri IS NOT NULL AS already_selected,
    TO_HEX(MD5(fl.frame_uri)) AS tiebreak
  FROM flagged AS fl
  LEFT JOIN previously_selected AS ps ON ps.frame_uri = fl.frame_uri
),
ranked_hits AS (
  SELECT
    *,
    ROW_NUMBER() OVER (PARTITION BY reason, already_selected ORDER BY tiebreak) AS rank_in_filter
  FROM hits
),
flagged_frames AS (
  SELECT
    frame_uri,
    STRING_AGG(reason, ',' ORDER BY filter_rank) AS reasons,
    MIN(filter_rank) AS best_filter_rank,
    COUNT(*) AS reason_count,
    MIN(tiebreak) AS tiebreak,
    MAX(CASE WHEN already_selected THEN 1 ELSE 0 END) = 1 AS already_selected,
    MAX(CASE WHEN filter_budget IS NULL OR rank_in_filter <= filter_budget THEN 1 ELSE 0 END) = 1 AS within_filter_budget
  FROM ranked_hits
  GROUP BY frame_uri
),
candidates AS (
  SELECT ff.*, df.client, df.camera_id, df.model_version, df.captured_at, df.image_width, df.image_height
  FROM flagged_frames AS ff
  JOIN day_frames AS df ON df.frame_uri = ff.frame_uri
),
camera_ranked AS (
  SELECT
    frame_uri,
    ROW_NUMBER() OVER (PARTITION BY camera_id ORDER BY best_filter_rank, reason_count DESC, tiebreak) AS rank_in_camera
  FROM candidates
  WHERE NOT already_selected AND within_filter_budget
),
day_ranked AS (
  SELECT
    c.frame_uri,
    ROW_NUMBER() OVER (ORDER BY c.best_filter_rank, c.reason_count DESC, c.tiebreak) AS rank_in_day
  FROM candidates AS c
  JOIN camera_ranked AS cr ON cr.frame_uri = c.frame_uri
  WHERE cr.rank_in_camera <= @max_frames_per_camera_per_day
)
SELECT
  c.frame_uri,
  c.client,
  c.camera_id,
  c.model_version,
  c.captured_at,
  c.image_width,
  c.image_height,
  c.reasons,
  c.best_filter_rank,
  c.reason_count,
  c.tiebreak,
  CASE
    WHEN c.already_selected THEN 'already_selected'
    WHEN NOT c.within_filter_budget THEN 'over_filter_budget'
    WHEN cr.rank_in_camera > @max_frames_per_camera_per_day THEN 'over_camera_budget'
    WHEN dr.rank_in_day > @max_frames_per_day THEN 'over_day_budget'
    ELSE 'selected'
  END AS status
FROM candidates AS c
LEFT JOIN camera_ranked AS cr ON cr.frame_uri = c.frame_uri
LEFT JOIN day_ranked AS dr ON dr.frame_uri = c.frame_uri
