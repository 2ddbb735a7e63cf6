"""The contract the learner and the reward service share: data loaders, the PSR action grid, ground-truth
scoring and metric names, the label at a grid, the mask codec, wire schemas and Redis key names.

It imports neither side (`tests/test_layout.py` checks it): a change here is a change of the contract,
and both sides see it.
"""
