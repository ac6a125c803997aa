"""rationad: a streaming log-anomaly daemon that explains itself."""

__version__ = "0.1.0"
