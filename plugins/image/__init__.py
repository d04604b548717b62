"""The built-in still-image decoder (JPEG, PNG, HEIC, TIFF, WebP...): desktop/images.py's
Pillow code behind the media-decoder contract (desktop/media.py), registered under the
`lumen.media` entry points like any third-party decoder."""

from __future__ import annotations

import functools
from collections.abc import Callable

from PIL import Image

from desktop import images
from desktop.media import Decoded, Frame, MediaMeta


@functools.cache
def _sniffers() -> tuple[Callable[[bytes], object], ...]:
    """Pillow's own magic-number tests for the formats whose extensions we claim (pillow-heif
    registers HEIF's when desktop.images imports it)."""
    Image.init()
    wanted = {fmt for ext, fmt in Image.registered_extensions().items() if ext in images.IMAGE_EXTENSIONS}
    return tuple(accept for fmt, (_, accept) in Image.OPEN.items() if fmt in wanted and accept is not None)


class ImageDecoder:
    name = "image"
    extensions = images.IMAGE_EXTENSIONS

    def sniff(self, head: bytes, path: str) -> bool:
        return any(accept(head) for accept in _sniffers())

    def read_meta(self, path: str) -> MediaMeta:
        return images.read_meta(path)

    def decode(self, path: str, size: int) -> Decoded:
        image, meta = images.decode_for_encoding(path, size)
        return Decoded([Frame(image)], meta, self.name)

    def thumbnail(self, path: str, size: int) -> Image.Image:
        return images.make_thumbnail(path, size)


decoder_plugin = ImageDecoder
