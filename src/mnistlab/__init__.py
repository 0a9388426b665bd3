"""mnistlab: design, train, inspect and ship compact CNNs on MNIST-style digits."""

__version__ = "0.1.0"
