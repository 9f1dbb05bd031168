"""The face pipeline: detections, alignment, quality, templates, and the engine that ties them."""
