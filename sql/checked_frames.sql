-- Every frame row of one model-day, each with the reason it cannot be used (drop_reason), NULL when valid.
-- The frames table holds one row per inferred frame, with or without detections: it is where a frame's
-- own fields (client, camera, capture time, image size) come from. Streaming inserts can write a frame
-- twice; of a frame's valid rows the first in a fixed column order is kept and the others are dropped as
-- `duplicate_frame_row`, so a frame is selected once, under one camera, whatever the engine. Only the
-- repeated frames are ranked, so the common case (no repeats) costs one aggregate on frame_uri.
-- A row without captured_at belongs to no day: rows of the model with a NULL captured_at are returned
-- (and counted) with every day's rows. Image sizes above 100000 px are not images but corrupt values.
-- Partition pruning: captured_at is compared with constant parameters only.
WITH
labelled AS (
  SELECT
    frame_uri,
    client,
    camera_id,
    model_version,
    captured_at,
    image_width,
    image_height,
    CASE
      WHEN captured_at IS NULL THEN 'no_capture_time'
      WHEN frame_uri IS NULL OR client IS NULL OR camera_id IS NULL
        OR image_width IS NULL OR image_height IS NULL THEN 'null_field'
      WHEN image_width <= 0 OR image_height <= 0 OR image_width > 100000 OR image_height > 100000 THEN 'bad_image_size'
      WHEN camera_id NOT IN UNNEST(@cameras) THEN 'unknown_camera'
      ELSE NULL
    END AS row_problem
  FROM frames
  WHERE model = @model
    AND ((captured_at >= @day_start AND captured_at < @day_end) OR captured_at IS NULL)
),
valid_rows AS (
  SELECT * FROM labelled WHERE row_problem IS NULL
),
repeated_frames AS (
  SELECT frame_uri FROM valid_rows GROUP BY frame_uri HAVING COUNT(*) > 1
)
SELECT frame_uri, client, camera_id, model_version, captured_at, image_width, image_height, row_problem AS drop_reason
FROM labelled
WHERE row_problem IS NOT NULL
UNION ALL
SELECT
  v.frame_uri, v.client, v.camera_id, v.model_version, v.captured_at, v.image_width, v.image_height,
  CAST(NULL AS STRING) AS drop_reason
FROM valid_rows AS v
LEFT JOIN repeated_frames AS r ON r.frame_uri = v.frame_uri
WHERE r.frame_uri IS NULL
UNION ALL
SELECT
  frame_uri, client, camera_id, model_version, captured_at, image_width, image_height,
  IF(
    ROW_NUMBER() OVER (
      PARTITION BY frame_uri ORDER BY captured_at, camera_id, client, model_version, image_width, image_height
    ) > 1,
    'duplicate_frame_row',
    NULL
  ) AS drop_reason
FROM valid_rows
WHERE frame_uri IN (SELECT frame_uri FROM repeated_frames)
