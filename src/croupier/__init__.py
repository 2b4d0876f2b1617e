"""croupier: a self-hostable event and money gateway for iGaming."""

__version__ = "0.1.0"
