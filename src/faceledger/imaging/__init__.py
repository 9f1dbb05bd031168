from faceledger.imaging.decode import ImageInput, decode_image

__all__ = ["ImageInput", "decode_image"]
