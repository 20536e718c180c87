"""Cluster operations: the SLURM profile installer and a throwaway single-node SLURM test cluster.

- `python -m pipeline.cluster.install_profile --partition P --account A ...` writes the Snakemake
  profile `slurm` (see docs/cluster.md).
- `python -m pipeline.cluster.plan --profile slurm results/<name>.table` prints the sbatch options of
  every job of a dry run (nothing is submitted).
- `python -m pipeline.cluster.testcluster start|stop|status` runs a one-node SLURM with accounting
  on 127.0.0.1 (root, Debian), used by tests/test_slurm.py.
"""
