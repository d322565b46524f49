"""ssdlib: the SSD object detector (Liu et al. 2016), one paper idea per module."""

__version__ = "0.1.0"
