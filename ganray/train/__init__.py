"""Training: one GAN step (step.py), the epoch loop (loop.py), the Ray Train trial (ray_trial.py)."""
