-- Frames of one model-day on which the model detected nothing at all, each with the reason it cannot be
-- used (drop_reason), NULL when valid. The old pull read only the objects table and never saw them.
SELECT checked_frames.*
FROM checked_frames
LEFT JOIN (
  -- Each frame with at least one detection, once: the anti-join then builds on 1 row per frame.
  SELECT DISTINCT frame_uri
  FROM predictions
  WHERE model = @model
    AND captured_at >= @day_start
    AND captured_at < @day_end
) AS detected
  ON detected.frame_uri = checked_frames.frame_uri
WHERE detected.frame_uri IS NULL
