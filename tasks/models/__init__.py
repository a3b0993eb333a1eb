"""Recommenders: one contract (base.Recommender), baselines and the meta-learner."""
