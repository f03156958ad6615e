"""Classifiers: tags, offline heuristics, and LLM judges with votes."""
