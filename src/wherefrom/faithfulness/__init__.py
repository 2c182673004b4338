"""Faithfulness checks: how well influence scores predict what retraining without some sequences really does.

The linear datamodeling score (LDS; Park et al. 2023, TRAK) retrains the model on random subsets of its
corpus and asks whether the sum of a subset's scores ranks the retrained models' query log-probabilities.
"""
