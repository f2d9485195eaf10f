-- What the `predictions` asset records of one model-day, computed where the rows are: the day's
-- prediction rows counted by drop_reason (NULL: valid), class and camera, and one more row (all three
-- NULL, `row_count` NULL) with the number of distinct frames among the valid detections.
SELECT
  drop_reason,
  class_name,
  camera_id,
  COUNT(*) AS row_count,
  NULL AS frames
FROM checked_predictions
GROUP BY drop_reason, class_name, camera_id
UNION ALL
SELECT
  NULL AS drop_reason,
  NULL AS class_name,
  NULL AS camera_id,
  NULL AS row_count,
  COUNT(DISTINCT frame_uri) AS frames
FROM (SELECT frame_uri FROM checked_predictions WHERE drop_reason IS NULL)
