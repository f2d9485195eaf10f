-- class_overlap with no class pairs named: two detections of any two different classes in one frame whose
-- IoU is at least @min_iou (a model without class-agnostic NMS). The detections of a frame meet each other
-- once per unordered pair (first class < second class): an equi-join on the frame, so the work grows with
-- detections per frame, never with the square of the day's detections. (With pairs named,
-- class_overlap.sql joins on the partner class as well, which is tighter when only a few pairs count.)
WITH box_pairs AS (
  SELECT
    a.frame_uri,
    a.x_min AS a_x_min, a.y_min AS a_y_min, a.x_max AS a_x_max, a.y_max AS a_y_max,
    b.x_min AS b_x_min, b.y_min AS b_y_min, b.x_max AS b_x_max, b.y_max AS b_y_max
  FROM detections AS a
  JOIN detections AS b ON a.frame_uri = b.frame_uri AND a.class_name < b.class_name
)
SELECT frame_uri FROM frames_with_overlapping_boxes
