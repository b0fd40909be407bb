"""Typed errors. Each maps to one HTTP status in the serving layer (``http_status``)."""

from __future__ import annotations


class KplateError(Exception):
    """Base class of every error the engine raises on purpose."""

    http_status = 500


class InvalidImageError(KplateError, ValueError):
    """The bytes are not a decodable image (empty, truncated, unknown format)."""

    http_status = 400


class ImageTooLargeError(KplateError, ValueError):
    """The image exceeds the byte or pixel limit (decompression-bomb guard)."""

    http_status = 413


class ConfigError(KplateError, ValueError):
    """A configuration file or option is invalid."""

    http_status = 500


class WeightsError(KplateError, FileNotFoundError):
    """Model weights are missing or do not match the model code."""

    http_status = 500
