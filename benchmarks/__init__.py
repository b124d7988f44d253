"""The evaluation harness: initialisers, fitters, metrics, reports. Depends on ``densereg``, never the reverse."""
