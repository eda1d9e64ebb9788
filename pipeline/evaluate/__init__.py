"""Evaluation: how good is a trained GAN?

Two answers, both comparable between runs:

- sample quality: FID on the standard Inception features (`inception.py`, `fid.py`) and, offline,
  on the features of a small MNIST classifier (`classifier.py`) with KID, precision/recall and
  mode coverage (`coverage.py`) in the same feature space;
- representation quality: a linear probe on the frozen discriminator's features, next to two
  controls, a random discriminator and raw pixels (`probe.py`).

`reference.py` computes the real-image statistics once per dataset; `run.py` evaluates one run.
"""
