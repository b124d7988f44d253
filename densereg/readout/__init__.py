"""From a trained network to answers: the batched forward pass (UVMap), faces, landmarks, parts, and the ``DenseReg`` predictor."""
