-- class_overlap: two detections of different classes in one frame whose IoU is at least @min_iou, for
-- the class pairs in @class_pairs ("first|second", first < second; every pair of the model's classes
-- when the filter names none). Each detection meets only its partner classes in its own frame: an
-- equi-join on (frame, class), so the work grows with detections per frame, never with the square of
-- the day's detections. IoU >= t is tested as intersection >= t * union to avoid dividing.
WITH pairs AS (
  SELECT
    SPLIT(pair, '|')[OFFSET(0)] AS first_class,
    SPLIT(pair, '|')[OFFSET(1)] AS second_class
  FROM UNNEST(@class_pairs) AS pair
),
firsts AS (
  SELECT d.frame_uri, p.second_class AS partner_class, d.x_min, d.y_min, d.x_max, d.y_max
  FROM detections AS d
  JOIN pairs AS p ON d.class_name = p.first_class
),
seconds AS (
  SELECT frame_uri, class_name, x_min, y_min, x_max, y_max
  FROM detections
  WHERE class_name IN (SELECT second_class FROM pairs)
)
SELECT DISTINCT a.frame_uri
FROM firsts AS a
JOIN seconds AS b
  ON a.frame_uri = b.frame_uri
  AND a.partner_class = b.class_name
  AND a.x_min < b.x_max AND b.x_min < a.x_max
  AND a.y_min < b.y_max AND b.y_min < a.y_max
WHERE (LEAST(a.x_max, b.x_max) - GREATEST(a.x_min, b.x_min)) * (LEAST(a.y_max, b.y_max) - GREATEST(a.y_min, b.y_min))
  >= @min_iou * (
    (a.x_max - a.x_min) * (a.y_max - a.y_min)
    + (b.x_max - b.x_min) * (b.y_max - b.y_min)
    - (LEAST(a.x_max, b.x_max) - GREATEST(a.x_min, b.x_min)) * (LEAST(a.y_max, b.y_max) - GREATEST(a.y_min, b.y_min))
  )
