-- class_overlap with class pairs named: two detections in one frame whose IoU is at least @min_iou, of
-- one of the pairs in @class_pairs ("first|second", first < second). Each detection meets only the
-- detections of its partner classes in its own frame: an equi-join on (frame, class), so the work grows
-- with detections per frame, never with the square of the day's detections. (With no pairs named,
-- class_overlap_any_classes.sql joins on the frame alone.)
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
),
box_pairs AS (
  SELECT
    a.frame_uri,
    a.x_min AS a_x_min, a.y_min AS a_y_min, a.x_max AS a_x_max, a.y_max AS a_y_max,
    b.x_min AS b_x_min, b.y_min AS b_y_min, b.x_max AS b_x_max, b.y_max AS b_y_max
  FROM firsts AS a
  JOIN seconds AS b ON a.frame_uri = b.frame_uri AND a.partner_class = b.class_name
)
SELECT frame_uri FROM frames_with_overlapping_boxes
