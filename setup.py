"""The one compiled part: region decoding over the system's libjpeg-turbo (sifar/data/_jpeg_region.c).

Optional: without a C compiler or libjpeg-turbo's headers (Debian: libjpeg62-turbo-dev) the build skips it
with a warning, and the loader decodes whole frames with simplejpeg instead. Everything else is in
pyproject.toml.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("sifar.data._jpeg_region", ["sifar/data/_jpeg_region.c"], libraries=["jpeg"],
                             optional=True)])
