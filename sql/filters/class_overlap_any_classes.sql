-- class_overlap with no class pairs named: two detections of any two different classes in one frame whose
-- IoU is at least @min_iou (a model without class-agnostic NMS). The detections of a frame meet each other
-- once per unordered pair (first class < second class): an equi-join on the frame, so the work grows with
-- detections per frame, never with the square of the day's detections. (With pairs named,
-- class_overlap.sql joins on the partner class as well, which is tighter when only a few pairs count.)
-- IoU >= t is tested as intersection >= t * union to avoid dividing.
SELECT DISTINCT a.frame_uri
FROM detections AS a
JOIN detections AS b
  ON a.frame_uri = b.frame_uri
  AND a.class_name < b.class_name
  AND a.x_min < b.x_max AND b.x_min < a.x_max
  AND a.y_min < b.y_max AND b.y_min < a.y_max
WHERE (LEAST(a.x_max, b.x_max) - GREATEST(a.x_min, b.x_min)) * (LEAST(a.y_max, b.y_max) - GREATEST(a.y_min, b.y_min))
  >= @min_iou * (
    (a.x_max - a.x_min) * (a.y_max - a.y_min)
    + (b.x_max - b.x_min) * (b.y_max - b.y_min)
    - (LEAST(a.x_max, b.x_max) - GREATEST(a.x_min, b.x_min)) * (LEAST(a.y_max, b.y_max) - GREATEST(a.y_min, b.y_min))
  )
