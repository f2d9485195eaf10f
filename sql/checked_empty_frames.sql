-- Frames of one model-day on which the model detected nothing at all, each with the reason it cannot be
-- used (drop_reason), NULL when valid. The old pull read only the objects table and never saw them.
-- An anti-join: a frame with any prediction row that day (malformed ones included) matches and is
-- filtered out, so each empty frame comes back once. (No DISTINCT on the predictions side: DuckDB then
-- builds on the frames and streams the ten times larger predictions past them.)
SELECT checked_frames.*
FROM checked_frames
LEFT JOIN (
  SELECT frame_uri
  FROM predictions
  WHERE model = @model
    AND captured_at >= @day_start
    AND captured_at < @day_end
) AS detected
  ON detected.frame_uri = checked_frames.frame_uri
WHERE detected.frame_uri IS NULL
