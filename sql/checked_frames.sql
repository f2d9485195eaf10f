-- Every frame of one model-day, each with the reason it cannot be used (drop_reason), NULL when valid.
-- The frames table holds one row per inferred frame, with or without detections: it is where a frame's
-- own fields (client, camera, capture time, image size) come from.
-- Partition pruning: captured_at is compared with constant parameters only.
SELECT
  frame_uri,
  client,
  camera_id,
  model_version,
  captured_at,
  image_width,
  image_height,
  CASE
    WHEN frame_uri IS NULL OR client IS NULL OR camera_id IS NULL OR captured_at IS NULL
      OR image_width IS NULL OR image_height IS NULL THEN 'null_field'
    WHEN image_width <= 0 OR image_height <= 0 THEN 'bad_image_size'
    WHEN camera_id NOT IN UNNEST(@cameras) THEN 'unknown_camera'
    ELSE NULL
  END AS drop_reason
FROM frames
WHERE model = @model
  AND captured_at >= @day_start
  AND captured_at < @day_end
