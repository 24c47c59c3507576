"""sifar: video action recognition with super images (Fan, Chen, Panda, ICLR 2022)."""

__version__ = "0.1.0"
