"""The system above the learner and the reward service: the `rss` command, process launchers, the demo,
the simulated rater and the benchmarks. The only package that imports both sides."""
