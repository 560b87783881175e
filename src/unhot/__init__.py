"""unhot: train image classifiers that see past one-hot labels.

MILe, Label Refinery, uncertainty distillation and EM + APL on one training loop; their
baselines and metrics; refined labels as a file.
"""

__version__ = "0.1.0"
