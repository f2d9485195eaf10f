-- class_overlap: two detections of different classes in one frame whose IoU is at least @min_iou; with
-- @any_pair false, only the pairs in @class_pairs ("first|second", first < second) count, and only
-- detections of @pair_classes take part. The join is on frame_uri, so the work grows with detections per
-- frame, never with the square of the day's detections. IoU >= t is tested as
-- intersection >= t * union to avoid dividing.
WITH boxes AS (
  SELECT frame_uri, class_name, x_min, y_min, x_max, y_max
  FROM detections
  WHERE class_name IN UNNEST(@pair_classes)
)
SELECT DISTINCT a.frame_uri
FROM boxes AS a
JOIN boxes AS b
  ON a.frame_uri = b.frame_uri
  AND a.class_name < b.class_name
  AND a.x_min < b.x_max AND b.x_min < a.x_max
  AND a.y_min < b.y_max AND b.y_min < a.y_max
WHERE (@any_pair OR CONCAT(a.class_name, '|', b.class_name) IN UNNEST(@class_pairs))
  AND (LEAST(a.x_max, b.x_max) - GREATEST(a.x_min, b.x_min)) * (LEAST(a.y_max, b.y_max) - GREATEST(a.y_min, b.y_min))
    >= @min_iou * (
      (a.x_max - a.x_min) * (a.y_max - a.y_min)
      + (b.x_max - b.x_min) * (b.y_max - b.y_min)
      - (LEAST(a.x_max, b.x_max) - GREATEST(a.x_min, b.x_min)) * (LEAST(a.y_max, b.y_max) - GREATEST(a.y_min, b.y_min))
    )
