"""The run's stages after the data: search (tuning.py), training and retraining (training.py, resume.py), the
finalists' repeats and racing (repeats.py), the final model (final_model.py) and the run's clock and ETA (eta.py). search.py drives them in that order."""
