"""Networks: classifiers built from MONAI and their self-describing checkpoints."""
