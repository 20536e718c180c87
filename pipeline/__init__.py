"""clipforge: all logic of the workflow; each Snakemake rule calls one `python -m pipeline <stage>`."""
__version__ = "0.1.0"
