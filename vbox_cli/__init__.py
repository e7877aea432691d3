"""vbox: declarative dev environments from an Envfile."""

__version__ = "0.1.0"
