"""Forked workers never enter a thread pool the parent started (the hang this module exists to prevent)."""

import cv2
import numpy as np
import torch

from densereg.data.workers import supervised_imap


def _blur_and_matmul(seed):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
    blurred = cv2.GaussianBlur(cv2.resize(img, (1024, 1024)), (0, 0), 3)
    x = torch.from_numpy(rng.standard_normal((256, 256)).astype(np.float32))
    return int(blurred.sum()) + int((x @ x).abs().sum() > 0), cv2.getNumThreads(), torch.get_num_threads()


def test_workers_after_the_parent_used_its_thread_pools():
    cv2.setNumThreads(2)
    torch.set_num_threads(2)
    for _ in range(3):   # start OpenCV's and torch's pools in the parent
        _blur_and_matmul(0)
    results = [r for _, r in sorted(supervised_imap(_blur_and_matmul, 4, 2))]
    assert [r[1:] for r in results] == [(1, 1)] * 4
    assert results[0][0] == _blur_and_matmul(0)[0]
    assert cv2.getNumThreads() == 2 and torch.get_num_threads() == 2   # the parent's settings are restored
