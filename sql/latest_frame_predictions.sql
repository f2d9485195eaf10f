-- The latest production predictions of some frames (@frame_uris), whatever their day: what a label-error
-- re-review shows beside the frames' current labels. The rows are checked_predictions' valid ones over a
-- window spanning all time (@day_start and @day_end are the extremes: a frame's day is not known here), so
-- BigQuery reads every partition of the predictions table and the cost guard bounds it.
-- A frame inferred more than once (inference re-run on a later day, another model version) has rows of
-- several inferences; an inference is a frame's rows of one capture time and model version. Only the latest
-- counts: the latest captured_at, then the greatest model_version (string order), so a frame's boxes all come
-- from one inference. Identical rows (a repeated streaming insert) come once. A frame without valid
-- predictions returns no row.
WITH
valid_detections AS (
  SELECT * FROM checked_predictions WHERE drop_reason IS NULL
),
frame_detections AS (
  SELECT
    *,
    DENSE_RANK() OVER (
      PARTITION BY frame_uri ORDER BY captured_at DESC NULLS LAST, model_version DESC NULLS LAST
    ) AS inference_rank
  FROM valid_detections
  WHERE frame_uri IN UNNEST(@frame_uris)
)
SELECT DISTINCT
  frame_uri,
  model_version,
  captured_at,
  class_name,
  score,
  x_min,
  y_min,
  x_max,
  y_max
FROM frame_detections
WHERE inference_rank = 1
ORDER BY frame_uri, class_name, score, x_min, y_min, x_max, y_max
