-- One model-day of detections, each with the reason it cannot be used (drop_reason), NULL when valid.
-- Invalid rows are returned rather than filtered so that every dropped row is counted in metadata.
-- A row without captured_at belongs to no day: rows of the model with a NULL captured_at are returned
-- (and counted) with every day's rows. Image sizes above 100000 px are not images but corrupt values.
-- Partition pruning: captured_at is compared with constant parameters only.
SELECT
  frame_uri,
  client,
  camera_id,
  model_version,
  captured_at,
  image_width,
  image_height,
  class_name,
  score,
  x_min,
  y_min,
  x_max,
  y_max,
  CASE
    WHEN captured_at IS NULL THEN 'no_capture_time'
    WHEN frame_uri IS NULL OR client IS NULL OR camera_id IS NULL
      OR image_width IS NULL OR image_height IS NULL OR class_name IS NULL OR score IS NULL
      OR x_min IS NULL OR y_min IS NULL OR x_max IS NULL OR y_max IS NULL THEN 'null_field'
    WHEN IS_NAN(score) OR IS_NAN(x_min) OR IS_NAN(y_min) OR IS_NAN(x_max) OR IS_NAN(y_max) THEN 'nan_value'
    WHEN score < 0 OR score > 1 THEN 'score_out_of_range'
    WHEN image_width <= 0 OR image_height <= 0 OR image_width > 100000 OR image_height > 100000 THEN 'bad_image_size'
    WHEN x_min >= x_max OR y_min >= y_max THEN 'inverted_box'
    WHEN x_min < 0 OR y_min < 0 OR x_max > image_width OR y_max > image_height THEN 'box_outside_image'
    WHEN class_name NOT IN UNNEST(@classes) THEN 'unknown_class'
    WHEN camera_id NOT IN UNNEST(@cameras) THEN 'unknown_camera'
    ELSE NULL
  END AS drop_reason
FROM predictions
WHERE model = @model
  AND ((captured_at >= @day_start AND captured_at < @day_end) OR captured_at IS NULL)
