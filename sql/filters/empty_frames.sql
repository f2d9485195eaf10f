-- empty_frames: frames with no detection at all; the filter's max_frames budget samples them by a hash of
-- the frame URI, so the sample is deterministic.
SELECT frame_uri
FROM empty_frames
