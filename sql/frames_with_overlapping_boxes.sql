-- Frames in which a pair of boxes from `box_pairs` (a frame_uri and the corners of two detections of that
-- frame: a_x_min ... b_y_max) overlaps with an IoU of at least @min_iou. The class_overlap fragments in
-- filters/ define box_pairs and read this file. IoU >= t is tested as intersection >= t * union, which
-- needs no division.
SELECT DISTINCT frame_uri
FROM (
  SELECT
    frame_uri,
    (LEAST(a_x_max, b_x_max) - GREATEST(a_x_min, b_x_min)) * (LEAST(a_y_max, b_y_max) - GREATEST(a_y_min, b_y_min)) AS intersection,
    (a_x_max - a_x_min) * (a_y_max - a_y_min) + (b_x_max - b_x_min) * (b_y_max - b_y_min) AS area_sum
  FROM box_pairs
  WHERE a_x_min < b_x_max AND b_x_min < a_x_max AND a_y_min < b_y_max AND b_y_min < a_y_max
)
WHERE intersection >= @min_iou * (area_sum - intersection)
