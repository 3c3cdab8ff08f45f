"""lrp-bench: LRP attributions and the localisation study of Kohlbrenner et al. (IJCNN 2020)."""

__version__ = "0.1.0"
