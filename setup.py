"""The optional C accelerator for chacha20-poly1305 (sftpd/ssh/_chacha.c); everything else
is declared in pyproject.toml. Without a compiler or OpenSSL 3's headers the build skips
it and sftpd uses the pure-Python path (sftpd/ssh/chacha.py)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sftpd.ssh._chacha",
            ["sftpd/ssh/_chacha.c"],
            libraries=["crypto"],
            optional=True,
        )
    ]
)
