"""Cluster operations: the SLURM profile installer and the dry-run sbatch planner.

- `python -m pipeline.cluster.install_profile --partition P --account A ...` writes the Snakemake
  profile `slurm` (see docs/cluster.md).
- `python -m pipeline.cluster.plan --profile slurm results/<name>.table` prints the sbatch options of
  every job of a dry run (nothing is submitted).
The throwaway test cluster the suite starts is test tooling: `python -m devtools.testcluster` (not installed).
"""
