-- Frames worth reviewing for one model-day. Each configured filter (a fragment in sql/filters/) flags
-- frames; the `flagged` CTE below is replaced by the union of the configured filters when the query is
-- built. Frames selected on an earlier day are excluded, then per-filter, per-camera and per-day budgets
-- are applied in a deterministic priority order: first configured filter first, then frames flagged by
-- more filters, then a hash of the frame URI (a stable pseudo-random order).
-- Returns every flagged frame with its `status`, so that dropped frames can be counted, and its
-- `filter_mask`: bit i is set when the i-th configured filter flagged it (the caller maps bits to filter
-- names; an ordered STRING_AGG of names per frame costs a third of the budget step on DuckDB).
WITH
detections AS (
  SELECT * FROM checked_predictions WHERE drop_reason IS NULL
),
empty_frames AS (
  SELECT * FROM checked_empty_frames WHERE drop_reason IS NULL
),
flagged AS (
  -- Placeholder with the shape of a compiled filter: frame_uri, filter_rank, filter_budget.
  SELECT frame_uri, 0 AS filter_rank, CAST(NULL AS INT64) AS filter_budget FROM detections WHERE FALSE
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
  -- Each frame's own fields come from the frames table, which has one row per frame.
  SELECT * FROM checked_frames WHERE drop_reason IS NULL
),
hits AS (
  SELECT
    fl.frame_uri,
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
    ROW_NUMBER() OVER (PARTITION BY filter_rank, already_selected ORDER BY tiebreak) AS rank_in_filter
  FROM hits
),
flagged_frames AS (
  SELECT
    frame_uri,
    BIT_OR(CAST(1 AS INT64) << filter_rank) AS filter_mask,
    MIN(filter_rank) AS best_filter_rank,
    COUNT(*) AS reason_count,
    MIN(tiebreak) AS tiebreak,
    LOGICAL_OR(already_selected) AS already_selected,
    LOGICAL_OR(filter_budget IS NULL OR rank_in_filter <= filter_budget) AS within_filter_budget
  FROM ranked_hits
  GROUP BY frame_uri
),
eligible AS (
  -- Frames still in the running for the camera and day budgets, with their own fields.
  SELECT ff.frame_uri, ff.best_filter_rank, ff.reason_count, ff.tiebreak, df.client, df.camera_id,
    df.model_version, df.captured_at, df.image_width, df.image_height
  FROM flagged_frames AS ff
  JOIN day_frames AS df ON df.frame_uri = ff.frame_uri
  WHERE NOT ff.already_selected AND ff.within_filter_budget
),
camera_ranked AS (
  SELECT
    *,
    ROW_NUMBER() OVER (PARTITION BY camera_id ORDER BY best_filter_rank, reason_count DESC, tiebreak) AS rank_in_camera
  FROM eligible
),
day_ranked AS (
  SELECT
    frame_uri,
    ROW_NUMBER() OVER (ORDER BY best_filter_rank, reason_count DESC, tiebreak) AS rank_in_day
  FROM camera_ranked
  WHERE rank_in_camera <= @max_frames_per_camera_per_day
)
SELECT
  ff.frame_uri,
  cr.client,
  cr.camera_id,
  cr.model_version,
  cr.captured_at,
  cr.image_width,
  cr.image_height,
  ff.filter_mask,
  ff.best_filter_rank,
  ff.reason_count,
  ff.tiebreak,
  CASE
    WHEN ff.already_selected THEN 'already_selected'
    WHEN NOT ff.within_filter_budget THEN 'over_filter_budget'
    WHEN cr.frame_uri IS NULL THEN 'no_frame_row'
    WHEN cr.rank_in_camera > @max_frames_per_camera_per_day THEN 'over_camera_budget'
    WHEN dr.rank_in_day > @max_frames_per_day THEN 'over_day_budget'
    ELSE 'selected'
  END AS status
FROM flagged_frames AS ff
LEFT JOIN camera_ranked AS cr ON cr.frame_uri = ff.frame_uri
LEFT JOIN day_ranked AS dr ON dr.frame_uri = ff.frame_uri
