"""latent-replay: a PyTorch reproduction suite for Latent Replay for Real-Time Continual Learning."""

__version__ = "0.1.0"
