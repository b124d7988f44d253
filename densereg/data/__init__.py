"""Datasets and their files: readers and writers, samples, dense ground truth, the synthetic benchmark."""
