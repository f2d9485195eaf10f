-- Frames of one model-day on which the model detected nothing at all, each with the reason it cannot be
-- used (drop_reason), NULL when valid. The old pull read only the objects table and never saw them.
SELECT
  f.frame_uri,
  f.client,
  f.camera_id,
  f.model_version,
  f.captured_at,
  f.image_width,
  f.image_height,
  CASE
    WHEN f.frame_uri IS NULL OR f.client IS NULL OR f.camera_id IS NULL OR f.captured_at IS NULL
      OR f.image_width IS NULL OR f.image_height IS NULL THEN 'null_field'
    WHEN f.image_width <= 0 OR f.image_height <= 0 THEN 'bad_image_size'
    WHEN f.camera_id NOT IN UNNEST(@cameras) THEN 'unknown_camera'
    ELSE NULL
  END AS drop_reason
FROM frames AS f
LEFT JOIN (
  -- Each frame with at least one detection, once: the anti-join then builds on 1 row per frame.
  SELECT DISTINCT frame_uri
  FROM predictions
  WHERE model = @model
    AND captured_at >= @day_start
    AND captured_at < @day_end
) AS detected
  ON detected.frame_uri = f.frame_uri
WHERE f.model = @model
  AND f.captured_at >= @day_start
  AND f.captured_at < @day_end
  AND detected.frame_uri IS NULL
