"""RSS learner: trains a segmentation policy from pixel- and image-level rewards."""

__version__ = "0.1.0"
