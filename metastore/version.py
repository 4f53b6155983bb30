"""The version of metastore (one place; the package and the webhook User-Agent read it)."""

__version__ = "0.1.0"
