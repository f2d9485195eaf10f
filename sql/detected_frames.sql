-- The frame of every prediction row of one model-day, malformed rows included (one row per prediction:
-- no DISTINCT, so that an anti-join against it builds on the frames and streams these rows past them on
-- DuckDB). A frame absent from it is a frame on which the model detected nothing at all.
SELECT frame_uri
FROM predictions
WHERE model = @model
  AND captured_at >= @day_start
  AND captured_at < @day_end
