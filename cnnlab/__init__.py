"""cnnlab: what a small convolutional network learns, as a one-session lab."""

__version__ = "0.1.0"
