"""HDM benchmark: Heatmap Distribution Matching for human pose estimation, reproduced.

Layout follows the data flow: ``data`` → ``codecs`` → ``models`` → ``losses`` →
``engine`` → ``metrics`` → ``tracking`` → ``report``. ``python -m pipeline --help``
lists the stages that Snakemake and DVC call.
"""
__version__ = "0.1.0"
