"""ganray: train and tune GANs on Ray with FID as the objective."""

__version__ = "0.1.0"
