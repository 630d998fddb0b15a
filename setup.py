"""Build configuration beyond pyproject.toml: the optional native steps.

Two small CPython extensions, each beside the layer it serves (no library of
their own: libsrtp is reached through the address pylibsrtp exposes):

- ``mediafed/transport/_transport.c``: the media socket's read loop and the send
  target (number, protect, send);
- ``mediafed/media/_forward.c``: the receive step and the fan-out, which hand
  packets to the transport through its C API (``transport/transport_api.h``).

They are optional: without a C compiler or Python headers the build warns and
mediafed runs its pure-Python path.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mediafed.transport._transport",
            ["mediafed/transport/_transport.c"],
            depends=["mediafed/transport/transport_api.h"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "mediafed.media._forward",
            ["mediafed/media/_forward.c"],
            depends=["mediafed/transport/transport_api.h"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ]
)
