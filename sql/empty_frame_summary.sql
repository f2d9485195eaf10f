-- What the `empty_frames` asset records of one model-day, computed where the rows are: the day's frame
-- rows (`frames_table`) and those of its frames without any detection (`empty_frames`: no prediction row
-- that day, malformed ones included), counted by drop_reason (NULL: valid) and camera. The frame rows'
-- counts show duplicate rows and rows without a capture time. The two CTEs are review_candidates.sql's,
-- word for word, so that a statement combining both computes them once.
WITH
frame_rows AS (
  SELECT * FROM checked_frames
),
empty_frame_rows AS (
  SELECT frame_rows.*
  FROM frame_rows
  LEFT JOIN detected_frames AS detected ON detected.frame_uri = frame_rows.frame_uri
  WHERE detected.frame_uri IS NULL
)
SELECT 'frames_table' AS rows_of, drop_reason, camera_id, COUNT(*) AS row_count
FROM frame_rows
GROUP BY drop_reason, camera_id
UNION ALL
SELECT 'empty_frames' AS rows_of, drop_reason, camera_id, COUNT(*) AS row_count
FROM empty_frame_rows
GROUP BY drop_reason, camera_id
