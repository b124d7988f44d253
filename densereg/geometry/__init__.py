"""The face in 3D: the template (mesh, UV, parts), the built-in and Basel models, rasterising, boxes."""
