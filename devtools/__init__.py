"""Test and benchmark tooling that is not part of the product (never installed with the `pipeline` package).

- `python -m devtools.testcluster start|stop|status`: a throwaway single-node SLURM cluster with accounting on
  127.0.0.1 (root, Debian), used by tests/test_slurm.py.
- `devtools.localserver.serve_directory`: a bounded loopback HTTP server over a folder, for the data tests and
  benchmarks (img2dataset downloads from it).
"""
