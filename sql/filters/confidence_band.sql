-- confidence_band: a detection of one of @classes with a score between @min_score and @max_score.
SELECT DISTINCT frame_uri
FROM detections
WHERE class_name IN UNNEST(@classes)
  AND score >= @min_score
  AND score <= @max_score
