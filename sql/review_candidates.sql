-- Frames worth reviewing for one model-day. Each configured filter (a fragment in sql/filters/) flags
-- frames; the `flagged` and `filter_budgets` CTEs below are replaced by the configured filters when the
-- query is built. Frames selected on an earlier day are excluded, then per-filter, per-camera and per-day
-- budgets are applied in a deterministic priority order: first configured filter first, then frames
-- flagged by more filters, then a hash of the frame URI (a stable pseudo-random order).
-- Returns every flagged frame with its `status`, so that dropped frames can be counted, and its
-- `filter_mask`: bit i is set when the i-th configured filter flagged it (the caller maps bits to filter
-- names; an ordered STRING_AGG of names per frame costs a third of the budget step on DuckDB).
WITH
detections AS (
  SELECT * FROM checked_predictions WHERE drop_reason IS NULL
),
frame_rows AS (
  -- Every frame row of the day with its drop_reason (checked_frames), checked once for the CTEs below.
  -- frame_rows and empty_frame_rows are defined as in empty_frame_summary.sql: a statement combining
  -- both (queries.combined_query) computes them once.
  SELECT * FROM checked_frames
),
empty_frame_rows AS (
  -- The frame rows of frames on which the model detected nothing at all (no prediction row that day).
  SELECT frame_rows.*
  FROM frame_rows
  LEFT JOIN detected_frames AS detected ON detected.frame_uri = frame_rows.frame_uri
  WHERE detected.frame_uri IS NULL
),
day_frames AS (
  -- Each frame's own fields come from the frames table (one valid row per frame, see checked_frames).
  SELECT * FROM frame_rows WHERE drop_reason IS NULL
),
empty_frames AS (
  SELECT * FROM empty_frame_rows WHERE drop_reason IS NULL
),
flagged AS (
  -- Placeholder with the shape of a compiled filter: each frame it flags, with the filter's rank.
  SELECT frame_uri, 0 AS filter_rank FROM detections WHERE FALSE
),
filter_budgets AS (
  -- Placeholder: one row per filter with a `max_frames` budget.
  SELECT 0 AS filter_rank, 0 AS filter_budget FROM detections WHERE FALSE
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
flagged_frames AS (
  SELECT
    f.*,
    ps.frame_uri IS NOT NULL AS already_selected,
    TO_HEX(MD5(f.frame_uri)) AS tiebreak
  FROM (
    SELECT
      frame_uri,
      BIT_OR(CAST(1 AS INT64) << filter_rank) AS filter_mask,
      MIN(filter_rank) AS best_filter_rank,
      COUNT(*) AS reason_count
    FROM flagged
    GROUP BY frame_uri
  ) AS f
  LEFT JOIN previously_selected AS ps ON ps.frame_uri = f.frame_uri
),
budget_ranks AS (
  -- A filter's budget takes its first max_frames frames in tiebreak order among those not selected
  -- before. Ranking only up to the largest budget lets DuckDB keep a top-N per filter instead of sorting
  -- every flagged frame (it does so for NULLS LAST only; a tiebreak is never NULL).
  SELECT
    ff.frame_uri,
    b.filter_budget,
    ROW_NUMBER() OVER (PARTITION BY b.filter_rank ORDER BY ff.tiebreak NULLS LAST) AS rank_in_filter
  FROM flagged_frames AS ff
  JOIN filter_budgets AS b ON (ff.filter_mask & (CAST(1 AS INT64) << b.filter_rank)) != 0
  WHERE NOT ff.already_selected
  QUALIFY rank_in_filter <= @largest_filter_budget
),
budget_winners AS (
  SELECT frame_uri, LOGICAL_OR(rank_in_filter <= filter_budget) AS within_budget
  FROM budget_ranks
  GROUP BY frame_uri
),
budgeted_frames AS (
  -- A frame is within its filters' budgets when one of its filters has no budget or keeps it.
  SELECT
    ff.*,
    (ff.filter_mask & @unbudgeted_filters) != 0 OR IFNULL(bw.within_budget, FALSE) AS within_filter_budget
  FROM flagged_frames AS ff
  LEFT JOIN budget_winners AS bw ON bw.frame_uri = ff.frame_uri
),
camera_ranked AS (
  -- Frames still in the running for the camera and day budgets, with their own fields.
  SELECT
    bf.frame_uri,
    bf.best_filter_rank,
    bf.reason_count,
    bf.tiebreak,
    df.client,
    df.camera_id,
    df.model_version,
    df.captured_at,
    df.image_width,
    df.image_height,
    ROW_NUMBER() OVER (
      PARTITION BY df.camera_id ORDER BY bf.best_filter_rank, bf.reason_count DESC, bf.tiebreak
    ) AS rank_in_camera
  FROM budgeted_frames AS bf
  JOIN day_frames AS df ON df.frame_uri = bf.frame_uri
  WHERE NOT bf.already_selected AND bf.within_filter_budget
),
day_ranked AS (
  SELECT
    frame_uri,
    ROW_NUMBER() OVER (ORDER BY best_filter_rank, reason_count DESC, tiebreak) AS rank_in_day
  FROM camera_ranked
  WHERE rank_in_camera <= @max_frames_per_camera_per_day
)
SELECT
  bf.frame_uri,
  cr.client,
  cr.camera_id,
  cr.model_version,
  cr.captured_at,
  cr.image_width,
  cr.image_height,
  bf.filter_mask,
  bf.best_filter_rank,
  bf.reason_count,
  bf.tiebreak,
  CASE
    WHEN bf.already_selected THEN 'already_selected'
    WHEN NOT bf.within_filter_budget THEN 'over_filter_budget'
    WHEN cr.frame_uri IS NULL THEN 'no_frame_row'
    WHEN cr.rank_in_camera > @max_frames_per_camera_per_day THEN 'over_camera_budget'
    WHEN dr.rank_in_day > @max_frames_per_day THEN 'over_day_budget'
    ELSE 'selected'
  END AS status
FROM budgeted_frames AS bf
LEFT JOIN camera_ranked AS cr ON cr.frame_uri = bf.frame_uri
LEFT JOIN day_ranked AS dr ON dr.frame_uri = bf.frame_uri
