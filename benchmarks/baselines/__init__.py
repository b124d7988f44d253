"""The baselines the paper compares with, built here: HOG, DPM and HOG-SVM detectors, AAM and MDM fitters."""
