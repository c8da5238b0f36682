"""Edge runtime: classify camera frames with an exported model, using only numpy, OpenCV and LiteRT.

Nothing in this package imports TensorFlow; a test enforces it.
"""
