"""Tests that kill the mutants mutmut left alive in pipeline/reduction (docs/robustness.md, "Mutation testing")."""
