"""Build configuration beyond pyproject.toml: the optional native send step.

``mediafed/transport/_hotpath.c`` is a small CPython extension (no library
of its own: it calls libsrtp through the address pylibsrtp exposes). It is
optional: without a C compiler or Python headers the build warns and
mediafed runs its pure-Python path.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mediafed.transport._hotpath",
            ["mediafed/transport/_hotpath.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
