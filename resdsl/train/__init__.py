"""Training the paper's experiments: ``resdsl train``, ``resdsl eval`` and ``resdsl plot``.

Recipes (resdsl.train.recipes) need only pyyaml; the loop (resdsl.train.loop) and the
data (resdsl.train.data) import torch, and the figures (resdsl.train.plot) matplotlib,
when a command runs. See docs/training.md.
"""
